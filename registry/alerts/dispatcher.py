"""Delivers queued alerts: one thread per channel, retries with exponential backoff.

A channel that is down (timeouts, 5xx) only delays its own queue; nothing upstream waits
for it — the consumer has already committed once the rows were queued. After
``max_attempts`` (or at once for a permanent error: a 4xx, a missing secret, a malformed
URL, anything else that stops an attempt) a delivery is marked ``failed`` with the reason.
A resolve is never sent before the trigger of the same key.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from registry import db
from registry.alerts import pagerduty, slack, webhook
from registry.alerts.http import ChannelNotReady, OutgoingRequest, post
from registry.alerts.model import Alert, SendResult
from uptake.registry_config import AlertSettings, PagerDutyChannel, SlackChannel, WebhookChannel

log = logging.getLogger(__name__)


def build_request(alert: Alert, channel: object, delivery_id: str) -> OutgoingRequest:
    if isinstance(channel, SlackChannel):
        return slack.build(alert, channel, delivery_id)
    if isinstance(channel, PagerDutyChannel):
        return pagerduty.build(alert, channel, delivery_id)
    if isinstance(channel, WebhookChannel):
        return webhook.build(alert, channel, delivery_id)
    raise TypeError(f"unknown channel {channel!r}")


class ChannelDispatcher:
    def __init__(self, engine: Engine, name: str, cfg: AlertSettings, poll_s: float = 0.2) -> None:
        self.engine = engine
        self.name = name
        self.cfg = cfg
        self.channel = cfg.channels[name]
        self.poll_s = poll_s
        self.sent = 0
        self.failed = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"alerts-{name}", daemon=True)

    def start(self) -> ChannelDispatcher:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:
                log.exception("alert channel %s: delivery loop error", self.name)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def deliver_due(self) -> int:
        """Attempt every due delivery once, in queue order; return how many were attempted."""
        t = db.alert_deliveries
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(t.c.channel == self.name, t.c.status == "pending")
                .order_by(t.c.id)
            ).all()
        blocked: set[str] = set()  # keys with an earlier undelivered row: keep their order
        attempted = 0
        for row in rows:
            if self._stop.is_set():
                break
            if row.dedup_key in blocked or row.next_attempt_at > db.now():
                blocked.add(row.dedup_key)
                continue
            attempted += 1
            result = self._attempt(row)
            self._record(row, result)
            if not result.ok:
                blocked.add(row.dedup_key)
        return attempted

    def _attempt(self, row: sa.Row) -> SendResult:
        try:
            alert = Alert.model_validate_json(row.alert)
            request = build_request(alert, self.channel, f"uptake-{row.id}")
            return post(request, self.channel.timeout_s)
        except ChannelNotReady as exc:
            return SendResult(ok=False, retryable=False, error=str(exc))
        except Exception as exc:  # a row that can never be sent must not loop: fail it, say why
            log.exception("alert channel %s: delivery %s cannot be attempted", self.name, row.id)
            return SendResult(ok=False, retryable=False, error=f"{type(exc).__name__}: {exc}")

    def _record(self, row: sa.Row, result: SendResult) -> None:
        t = db.alert_deliveries
        attempts = row.attempts + 1
        values: dict[str, object] = {"attempts": attempts}
        if result.ok:
            values.update(status="sent", sent_at=db.now(), last_error=None)
            self.sent += 1
            log.info("alert %s %s sent to %s", row.action, row.dedup_key, self.name)
        elif result.retryable and attempts < self.cfg.max_attempts:
            delay = min(self.cfg.backoff_s * 2 ** (attempts - 1), self.cfg.backoff_max_s)
            if result.retry_after_s is not None:
                delay = max(delay, min(result.retry_after_s, self.cfg.backoff_max_s))
            values.update(next_attempt_at=db.now() + delay, last_error=result.error)
            log.warning(
                "alert to %s failed (attempt %d/%d, retry in %.1fs): %s",
                self.name,
                attempts,
                self.cfg.max_attempts,
                delay,
                result.error,
            )
        else:
            values.update(status="failed", last_error=result.error)
            self.failed += 1
            log.error(
                "alert %s %s to %s failed for good after %d attempt(s): %s",
                row.action,
                row.dedup_key,
                self.name,
                attempts,
                result.error,
            )
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.id == row.id).values(**values))
