"""The watcher's outbox: a release is stored ``pending`` first, produced, then ``published``.

The shared outbox (``uptake.outbox``) over the releases table: a crash between the produce and
the mark re-sends the very same event (same release id, same event id), which consumers dedupe;
a row that can never be published is marked ``failed`` and the releases after it still go out.
This module only adds the watcher's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from uptake.events import Event
from uptake.outbox import Outbox as SharedOutbox
from uptake.outbox import Publisher
from watcher.metrics import WatcherMetrics
from watcher.store import Store, releases_table

log = logging.getLogger(__name__)

__all__ = ["Outbox", "Publisher"]


class Outbox(SharedOutbox):
    def __init__(self, store: Store, producer: Publisher, metrics: WatcherMetrics) -> None:
        super().__init__(
            store.engine,
            releases_table,
            producer,
            key="release_id",
            order_by=("detected_at", "release_id"),
        )
        self.metrics = metrics

    def flush(self) -> int:
        """Publish every pending release in order; a broker outage stops it until the next."""
        try:
            return super().flush()
        finally:
            self.metrics.outbox_pending.set(self.pending())

    def published(self, row: Mapping[str, Any], event: Event) -> None:
        source = getattr(event, "source", "?")
        self.metrics.releases.labels(source).inc()
        repo_time = row["repo_time"]
        if repo_time is not None:
            latency = (datetime.now(UTC) - repo_time).total_seconds()
            self.metrics.detection_latency.labels(source).observe(max(latency, 0.0))
        log.info("published %s", row["release_id"])

    def publish_failed(self, row: Mapping[str, Any], error: str) -> None:
        self.metrics.publish_failures.inc()
