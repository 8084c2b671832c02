"""Polling on a schedule (APScheduler): each source at its own interval, in its own thread.

Every poll schedules its successor as a one-shot job: ``interval_s`` after the poll *started*
when it succeeded (so detection latency stays within interval + poll time), or the backoff
delay after it failed. One-shot jobs with fresh ids avoid racing APScheduler's own
rescheduling of interval jobs. A delay is clamped to what the source could ever wait, and a
poll whose successor cannot be scheduled at that delay is rescheduled at ``backoff_max_s``:
nothing a hub answers ends a source's polling.

Webhooks add a lookup of one repo, coalesced so that a flood or replay of valid hooks cannot
queue unbounded work nor starve the scheduled polls: per (source, repo) at most one lookup is
queued and lookups start at least ``HOOK_COOLDOWN_S`` apart (a hook that arrives meanwhile is
covered by the queued one, which reads the hub after it); none is queued while the source is
backing off (its retry poll lists the repo anyway), and at most ``MAX_QUEUED_HOOKS`` overall.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watcher.service import SourceOutcome, WatcherService

log = logging.getLogger(__name__)

HOOK_COOLDOWN_S = 1.0  # per (source, repo): lookups start at least this far apart
MAX_QUEUED_HOOKS = 256  # lookups waiting to start, all sources together


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
        self._hooks_queued: set[tuple[str, str]] = set()
        self._hook_started: dict[tuple[str, str], float] = {}  # monotonic start of the last
        self._backoff_until: dict[str, float] = {}  # monotonic; no hook lookups before it

    def start(self) -> None:
        for name in self.service.pollers:
            self._schedule(name, 0.0)
        outbox_every = self.service.settings.watcher.outbox_retry_s
        self.scheduler.add_job(
            self.service.outbox.flush, "interval", seconds=outbox_every, id="outbox"
        )
        self.scheduler.start()

    def _bounded(self, name: str, delay_s: float) -> float:
        """A finite delay, no longer than the source's interval or the longest backoff."""
        longest = max(self.service.interval(name), self.service.settings.watcher.backoff_max_s)
        if math.isnan(delay_s):
            return longest
        return min(max(delay_s, 0.0), longest)

    def _schedule(self, name: str, delay_s: float) -> None:
        when = datetime.now(UTC) + timedelta(seconds=self._bounded(name, delay_s))
        with self._lock:
            self.next_poll[name] = when
            job_id = f"poll:{name}:{next(self._seq)}"
        self.scheduler.add_job(self._poll, "date", run_date=when, args=[name], id=job_id)

    def _poll(self, name: str) -> None:
        started = time.monotonic()
        delay = self.service.settings.watcher.backoff_max_s
        try:
            delay = self.service.interval(name)
            outcome = self.service.poll_source(name)
            self._note(name, outcome)
            if outcome.ok:
                delay = self.service.interval(name) - (time.monotonic() - started)
            else:
                delay = outcome.retry_in_s
        except Exception:  # never let a source's schedule die
            log.exception("source %s: poll crashed", name)
        if self.scheduler.running:
            self._reschedule(name, delay)

    def _reschedule(self, name: str, delay_s: float) -> None:
        try:
            self._schedule(name, delay_s)
        except Exception:
            fallback = self.service.settings.watcher.backoff_max_s
            log.exception(
                "source %s: could not schedule the next poll in %r s; polling in %g s",
                name,
                delay_s,
                fallback,
            )
            self._schedule(name, fallback)

    def _note(self, name: str, outcome: SourceOutcome) -> None:
        with self._lock:
            if outcome.ok:
                self._backoff_until.pop(name, None)
            else:
                until = time.monotonic() + self._bounded(name, outcome.retry_in_s)
                self._backoff_until[name] = until

    def backing_off(self, name: str) -> bool:
        """Whether source ``name`` failed lately and waits for its retry (no hook lookups)."""
        with self._lock:
            return time.monotonic() < self._backoff_until.get(name, 0.0)

    def trigger_repo(self, name: str, repo_id: str) -> bool:
        """Look at ``repo_id`` in source ``name`` soon (a verified webhook).

        False when coalesced into a lookup already queued, or dropped (source backing off,
        too many queued): the scheduled polls still see the repo.
        """
        key = (name, repo_id)
        now = time.monotonic()
        with self._lock:
            if now < self._backoff_until.get(name, 0.0):
                log.debug("source %s backing off: hook for %s left to its retry", name, repo_id)
                return False
            if key in self._hooks_queued:
                return False
            if len(self._hooks_queued) >= MAX_QUEUED_HOOKS:
                log.warning("%d hook lookups queued: hook for %s dropped", MAX_QUEUED_HOOKS, key)
                return False
            if len(self._hook_started) > 4 * MAX_QUEUED_HOOKS:  # forget what cooled down
                self._hook_started = {
                    k: t for k, t in self._hook_started.items() if now - t < HOOK_COOLDOWN_S
                }
            wait = max(0.0, self._hook_started.get(key, -math.inf) + HOOK_COOLDOWN_S - now)
            self._hooks_queued.add(key)
            job_id = f"hook:{name}:{next(self._seq)}"
        try:
            self.scheduler.add_job(
                self._lookup,
                "date",
                run_date=datetime.now(UTC) + timedelta(seconds=wait),
                args=[name, repo_id],
                id=job_id,
            )
        except Exception:
            with self._lock:
                self._hooks_queued.discard(key)
            raise
        return True

    def _lookup(self, name: str, repo_id: str) -> None:
        with self._lock:
            self._hooks_queued.discard((name, repo_id))
            self._hook_started[(name, repo_id)] = time.monotonic()
        self._note(name, self.service.poll_repo(name, repo_id))

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; ``wait=False`` leaves a poll in flight to end on its timeout."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
