"""Source health alerts: ``alert.raised`` after N failed polls in a row, resolved on recovery.

The event (uptake.events.AlertRaised, on the releases topic) is delivered to on-call by the
alerter; the dedup key is ``watcher:<source>:source_failing`` so the resolve closes the same
incident. The firing flag lives in the store, so a restart neither repeats nor forgets it.
"""

from __future__ import annotations

import logging

from uptake.events import AlertRaised
from watcher.faults import SourceFault
from watcher.metrics import WatcherMetrics
from watcher.outbox import Publisher
from watcher.store import Store

log = logging.getLogger(__name__)

CONDITION = "source_failing"


class SourceAlerts:
    def __init__(
        self, store: Store, producer: Publisher, metrics: WatcherMetrics, alert_after: int
    ) -> None:
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self.alert_after = alert_after

    def failed(self, source: str, consecutive: int, fault: SourceFault) -> None:
        state = self.store.source_state(source)
        if consecutive < self.alert_after or (state is not None and state.alert_firing):
            return
        alert = AlertRaised(
            component=f"watcher:{source}",
            condition=CONDITION,
            severity="error",
            summary=f"watcher source {source} failed {consecutive} polls in a row: {fault}",
            details={
                "source": source,
                "kind": fault.kind,
                "last_error": fault.message[:500],
                "consecutive_failures": str(consecutive),
            },
            producer="watcher",
        )
        if self._publish(alert):
            self.store.set_alert(source, True)
            self.metrics.alerts.labels(source, "firing").inc()

    def recovered(self, source: str) -> None:
        state = self.store.source_state(source)
        if state is None or not state.alert_firing:
            return
        alert = AlertRaised(
            component=f"watcher:{source}",
            condition=CONDITION,
            severity="info",
            summary=f"watcher source {source} polls again",
            details={"source": source},
            resolved=True,
            producer="watcher",
        )
        if self._publish(alert):
            self.store.set_alert(source, False)
            self.metrics.alerts.labels(source, "resolved").inc()

    def _publish(self, alert: AlertRaised) -> bool:
        try:
            self.producer.publish(alert)
        except Exception as exc:  # tried again at the next failure / recovery
            log.warning("could not publish alert %s: %s", alert.key(), exc)
            return False
        log.warning("alert %s: %s", "resolved" if alert.resolved else "raised", alert.summary)
        return True
