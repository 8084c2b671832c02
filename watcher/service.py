"""The watcher service: sources, store, outbox, alerts and metrics wired together.

``poll_source`` is the one place a poll's outcome is handled: metrics, the store's failure
count, the alert, and the delay until the next attempt (the interval after a success; an
exponential backoff, at least the server's Retry-After, after a failure). Each source has its
own lock, so a webhook-triggered lookup never races the same source's scheduled poll, while
different sources never wait for each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from uptake.bus import EventProducer, ensure_topics
from uptake.settings import Settings
from watcher.alerts import SourceAlerts
from watcher.faults import SourceFault
from watcher.metrics import WatcherMetrics
from watcher.outbox import Outbox, Publisher
from watcher.poller import Poller, PollResult
from watcher.sources import build_source
from watcher.store import Store

log = logging.getLogger(__name__)


@dataclass
class SourceOutcome:
    source: str
    ok: bool
    result: PollResult | None = None
    fault: SourceFault | None = None
    retry_in_s: float = 0.0  # after a failure: when to try again


def backoff_delay(consecutive: int, fault: SourceFault, initial: float, maximum: float) -> float:
    """Exponential per consecutive failure, capped, and never sooner than the server asked,
    up to ``maximum``: a hub's Retry-After of ten years must not pause a source for ten years."""
    delay = min(maximum, initial * 2 ** min(max(consecutive - 1, 0), 60))
    if fault.retry_after_s is not None and fault.retry_after_s == fault.retry_after_s:  # not NaN
        delay = max(delay, min(fault.retry_after_s, maximum))
    return delay


class WatcherService:
    def __init__(
        self,
        settings: Settings,
        *,
        producer: Publisher | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = WatcherMetrics()
        self.store = store or Store.for_settings(settings)
        self._owns_producer = producer is None
        self.producer: Publisher = producer or EventProducer(settings, "watcher")
        self.outbox = Outbox(self.store, self.producer, self.metrics)
        self.alerts = SourceAlerts(
            self.store, self.producer, self.metrics, settings.watcher.alert_after
        )
        self.pollers: dict[str, Poller] = {}
        for config in settings.sources:
            source = build_source(config, settings)
            if hasattr(source, "on_request"):
                source.on_request = self.metrics.requests.labels(config.name).inc
            self.pollers[config.name] = Poller(source, self.store)
        self._locks = {name: threading.Lock() for name in self.pollers}

    @property
    def sources(self) -> dict[str, Poller]:
        return self.pollers

    def start(self) -> None:
        """Make sure the topic exists and re-publish whatever a previous run left pending."""
        ensure_topics(self.settings, [self.settings.kafka.topics.releases])
        sent = self.outbox.flush()
        if sent:
            log.info("re-published %d release(s) left pending by a previous run", sent)

    def interval(self, name: str) -> float:
        return self.pollers[name].source.config.interval_s

    # -- polls ------------------------------------------------------------------------------

    def poll_source(self, name: str) -> SourceOutcome:
        return self._guarded(name, self.pollers[name].poll)

    def poll_repo(self, name: str, repo_id: str) -> SourceOutcome:
        return self._guarded(name, lambda: self.pollers[name].poll_repo(repo_id))

    def _guarded(self, name: str, action: Callable[[], PollResult]) -> SourceOutcome:
        started = time.monotonic()
        with self._locks[name]:
            try:
                result = action()
            except SourceFault as fault:
                outcome = self._failed(name, fault)
            except Exception as exc:  # a bug or an unexpected library error: still a failure
                log.exception("source %s: unexpected error", name)
                outcome = self._failed(
                    name, SourceFault("http_error", f"{type(exc).__name__}: {exc}")
                )
            else:
                outcome = self._succeeded(name, result)
            finally:
                self.metrics.poll_duration.labels(name).observe(time.monotonic() - started)
        if outcome.ok and outcome.result is not None and outcome.result.released:
            self.outbox.flush()
        return outcome

    def _succeeded(self, name: str, result: PollResult) -> SourceOutcome:
        self.metrics.polls.labels(name, "ok").inc()
        self.metrics.consecutive_failures.labels(name).set(0)
        self.metrics.last_success.labels(name).set(time.time())
        for _, reason in result.skipped:
            self.metrics.skips.labels(name, reason).inc()
        self.store.record_success(name)
        self.alerts.recovered(name)
        return SourceOutcome(name, True, result=result)

    def _failed(self, name: str, fault: SourceFault) -> SourceOutcome:
        consecutive = self.store.record_failure(name, str(fault))
        w = self.settings.watcher
        delay = backoff_delay(consecutive, fault, w.backoff_initial_s, w.backoff_max_s)
        self.metrics.polls.labels(name, "failed").inc()
        self.metrics.failures.labels(name, fault.kind).inc()
        self.metrics.consecutive_failures.labels(name).set(consecutive)
        log.warning(
            "source %s: poll failed (%d in a row): %s; nothing published, retry in %.1fs",
            name,
            consecutive,
            fault,
            delay,
        )
        self.alerts.failed(name, consecutive, fault)
        return SourceOutcome(name, False, fault=fault, retry_in_s=delay)

    def run_once(self) -> list[SourceOutcome]:
        """One poll of every source (``uptake watch --once``); a failing one stops no other."""
        self.start()
        outcomes = [self.poll_source(name) for name in self.pollers]
        self.outbox.flush()
        return outcomes

    def close(self) -> None:
        for poller in self.pollers.values():
            poller.source.close()
        if self._owns_producer and isinstance(self.producer, EventProducer):
            self.producer.close()
        self.store.close()
