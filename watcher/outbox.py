"""The outbox: a release is stored ``pending`` first, produced, and only then ``published``.

A crash between the produce and the mark leaves the row pending; the next start (or the next
flush) produces the very same event again — same release id, same event id — which consumers
dedupe. Nothing is ever lost and no second distinct release exists for one revision.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Protocol

from uptake.events import Event, decode_event
from watcher.metrics import WatcherMetrics
from watcher.store import Store

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, event: Event, topic: str | None = None, timeout_s: float = 30.0) -> int: ...


class Outbox:
    def __init__(self, store: Store, producer: Publisher, metrics: WatcherMetrics) -> None:
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Publish every pending release in order; stop at the first failure (broker down)."""
        with self._lock:
            pending = self.store.pending()
            sent = 0
            try:
                for row in pending:
                    event = decode_event(row.payload)
                    try:
                        self.producer.publish(event)  # blocks until the broker acknowledged
                    except Exception as exc:
                        self.metrics.publish_failures.inc()
                        self.store.note_publish_failure(row.release_id, f"{exc}")
                        log.warning(
                            "publishing %s failed (%s); it stays pending and is retried",
                            row.release_id,
                            exc,
                        )
                        break
                    self.store.mark_published(row.release_id)
                    sent += 1
                    source = getattr(event, "source", "?")
                    self.metrics.releases.labels(source).inc()
                    if row.repo_time is not None:
                        latency = (datetime.now(UTC) - row.repo_time).total_seconds()
                        self.metrics.detection_latency.labels(source).observe(max(latency, 0.0))
                    log.info("published %s", row.release_id)
            finally:
                self.metrics.outbox_pending.set(len(pending) - sent)
            return sent
