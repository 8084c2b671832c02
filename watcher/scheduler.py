"""Polling on a schedule (APScheduler): each source at its own interval, in its own thread.

Every poll schedules its successor as a one-shot job: ``interval`` after the poll *started*
when it succeeded (so detection latency stays within interval + poll time), or the backoff
delay after it failed. One-shot jobs with fresh ids avoid racing APScheduler's own
rescheduling of interval jobs. Webhooks add an immediate one-shot lookup of one repo.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watcher.service import WatcherService

log = logging.getLogger(__name__)


class WatchScheduler:
    def __init__(self, service: WatcherService) -> None:
        self.service = service
        workers = max(4, 2 * len(service.pollers) + 2)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.next_poll: dict[str, datetime] = {}

    def start(self) -> None:
        for name in self.service.pollers:
            self._schedule(name, 0.0)
        outbox_every = self.service.settings.watcher.outbox_retry
        self.scheduler.add_job(
            self.service.outbox.flush, "interval", seconds=outbox_every, id="outbox"
        )
        self.scheduler.start()

    def _schedule(self, name: str, delay_s: float) -> None:
        when = datetime.now(UTC) + timedelta(seconds=max(delay_s, 0.0))
        with self._lock:
            self.next_poll[name] = when
            job_id = f"poll:{name}:{next(self._seq)}"
        self.scheduler.add_job(self._poll, "date", run_date=when, args=[name], id=job_id)

    def _poll(self, name: str) -> None:
        started = time.monotonic()
        try:
            outcome = self.service.poll_source(name)
            if outcome.ok:
                delay = self.service.interval(name) - (time.monotonic() - started)
            else:
                delay = outcome.retry_in_s
        except Exception:  # never let a source's schedule die
            log.exception("source %s: poll crashed", name)
            delay = self.service.interval(name)
        if self.scheduler.running:
            self._schedule(name, delay)

    def trigger_repo(self, name: str, repo_id: str) -> None:
        """Look at ``repo_id`` in source ``name`` now (a verified webhook)."""
        self.scheduler.add_job(
            self.service.poll_repo,
            "date",
            run_date=datetime.now(UTC),
            args=[name, repo_id],
            id=f"hook:{name}:{next(self._seq)}",
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; ``wait=False`` leaves a poll in flight to end on its timeout."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
