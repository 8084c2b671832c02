"""Alerts: channel payload formats, routing, de-duplication, retries, and the bus end to end."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

import pytest
import sqlalchemy as sa

from registry import db
from registry.alerts.dispatcher import ChannelDispatcher
from registry.alerts.router import enqueue
from registry.alerts.rules import alerts_for
from registry.alerts.service import AlerterService
from registry.db import make_engine
from tests.core.http_servers import HostileServer
from tests.registry.helpers import Endpoint, wait_for
from uptake.bus import EventProducer, ensure_topics
from uptake.events import (
    AlertRaised,
    CandidateRegistered,
    ChampionChanged,
    DeadLetter,
    GateCheck,
    PromotionDecided,
    RunFailed,
)
from uptake.registry_config import AlertSettings
from uptake.settings import Settings

RID = "hf:acme/base@abc123"
FAILED = RunFailed(release_id=RID, stage="train", reason="CUDA out of memory", producer="worker-1")
SUCCEEDED = CandidateRegistered(
    release_id=RID,
    registered_model="uptake-legal",
    version="4",
    model_uri="models:/uptake-legal/4",
    suite_sha="s" * 64,
    all_pass_rate=0.5,
    criterion_pass_rate=0.8,
)
PENDING = PromotionDecided(
    registered_model="uptake-legal",
    version="4",
    release_id=RID,
    outcome="pending_approval",
    reason="beats champion v3",
    checks=[GateCheck(name="all_pass_rate_vs_champion", passed=True, value=0.1, threshold=0.0)],
)
LETTER = DeadLetter(
    origin_topic="uptake.runs",
    origin_partition=1,
    origin_offset=42,
    origin_key="k",
    consumer_group="uptake-promoter",
    error_kind="invalid_json",
    error="invalid JSON",
    payload="{",
)
ROLLBACK = ChampionChanged(
    registered_model="uptake-legal",
    version="2",
    previous_version="3",
    model_uri="models:/uptake-legal/2",
    reason="rollback",
)
SOURCE_DOWN = AlertRaised(
    component="watcher:hf", condition="source_failing", severity="error", summary="hf down"
)

PD_KEY = "pd-routing-key-0123456789abcdef"
HOOK_SECRET = "hook-secret"


def alert_settings(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    slack: Endpoint,
    pagerduty: Endpoint,
    hook_url: str,
    **extra: object,
) -> Settings:
    monkeypatch.setenv("TEST_SLACK_URL", slack.url)
    monkeypatch.setenv("TEST_PD_KEY", PD_KEY)
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK_SECRET)
    alerts = AlertSettings.model_validate(
        {
            "channels": {
                "slack": {"type": "slack", "url_env": "TEST_SLACK_URL"},
                "oncall": {
                    "type": "pagerduty",
                    "routing_key_env": "TEST_PD_KEY",
                    "events_url": pagerduty.url,
                },
                "audit": {
                    "type": "webhook",
                    "url": hook_url,
                    "secret_env": "TEST_HOOK_SECRET",
                    "kinds": ["dead_letter", "rollback"],
                    "timeout_s": 1,
                },
            },
            "backoff_s": 0.05,
            "backoff_max_s": 0.2,
            "max_attempts": 4,
            "grouping": {"dead_letter": {"group_wait_s": 0}},  # grouped, sent at once
            **extra,
        }
    )
    return settings.model_copy(update={"alerts": alerts})


def drain(engine, cfg: AlertSettings) -> dict[str, ChannelDispatcher]:
    dispatchers = {name: ChannelDispatcher(engine, name, cfg) for name in cfg.channels}
    for _ in range(40):  # a few rounds: retries become due after their (tiny) backoff
        for d in dispatchers.values():
            d.deliver_due()
        if all(_pending(engine, n) == 0 for n in dispatchers):
            break
        time.sleep(0.06)
    return dispatchers


def _pending(engine, channel: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                db.alert_deliveries.c.channel == channel,
                db.alert_deliveries.c.status == "pending",
            )
        ).scalar_one()


def test_payloads_match_each_channels_documented_format(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(settings, monkeypatch, slack, pd, hook.url)
        engine = make_engine(s)
        for event in (FAILED, SUCCEEDED, LETTER):
            for alert in alerts_for(event, s.alerts, "http://mlflow.example"):
                enqueue(engine, alert, s.alerts)
        drain(engine, s.alerts)

        # PagerDuty Events API v2: trigger, then resolve with the same dedup_key
        trigger, resolve = pd.bodies()
        assert trigger["routing_key"] == PD_KEY and trigger["event_action"] == "trigger"
        assert trigger["dedup_key"] == f"uptake/run_failed/{RID}"
        payload = trigger["payload"]
        assert payload["severity"] == "error" and payload["source"] == "worker-1"
        assert "CUDA out of memory" in payload["summary"] and len(payload["summary"]) <= 1024
        assert payload["class"] == "run_failed" and payload["custom_details"]["stage"] == "train"
        datetime.fromisoformat(payload["timestamp"])
        assert resolve == {
            "routing_key": PD_KEY,
            "event_action": "resolve",
            "dedup_key": trigger["dedup_key"],
        }
        assert all(r.headers["Content-Type"] == "application/json" for r in pd.received)

        # Slack incoming webhook: text fallback + blocks; failure, resolve and the dead letter
        messages = slack.bodies()
        assert len(messages) == 3
        for message in messages:
            assert isinstance(message["text"], str) and message["text"]
            assert message["blocks"][0]["type"] == "header"
            assert len(message["blocks"][0]["text"]["text"]) <= 150
            assert all(b["type"] in ("header", "section", "context") for b in message["blocks"])
        assert "CUDA out of memory" in messages[0]["text"]
        assert messages[1]["text"].startswith(":white_check_mark: Resolved")
        assert "uptake.runs[1]@42" in messages[2]["text"]

        # generic webhook: only the kinds it asked for, signed over "{timestamp}.{body}"
        (received,) = hook.received
        body = received.json()
        assert body["schema_version"] == 1 and body["alert"]["kind"] == "dead_letter"
        assert body["alert"]["severity"] == "warning"
        ts = received.headers["X-Uptake-Timestamp"]
        mac = hmac.new(HOOK_SECRET.encode(), f"{ts}.".encode() + received.body, hashlib.sha256)
        assert received.headers["X-Uptake-Signature"] == "sha256=" + mac.hexdigest()
        assert received.headers["X-Uptake-Delivery"]


def test_retries_with_backoff_and_a_dead_channel_blocks_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = "http://127.0.0.1:9/hook"  # discard port: connection refused
    with Endpoint(statuses=[500, 429]) as slack, Endpoint(statuses=[400]) as pd:
        s = alert_settings(settings, monkeypatch, slack, pd, dead)
        engine = make_engine(s)
        for event in (FAILED, LETTER):
            for alert in alerts_for(event, s.alerts):
                enqueue(engine, alert, s.alerts)
        dispatchers = drain(engine, s.alerts)
        assert len(slack.received) == 4  # 500, 429, then both messages
        assert dispatchers["slack"].sent == 2 and dispatchers["slack"].failed == 0
        assert len(pd.received) == 1 and dispatchers["oncall"].failed == 1  # 400: not retried
        assert dispatchers["audit"].failed == 1  # gave up after max_attempts, nothing stuck


def test_missing_secret_fails_the_channel_not_the_alerter(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(settings, monkeypatch, slack, pd, hook.url)
        monkeypatch.delenv("TEST_PD_KEY")
        engine = make_engine(s)
        for alert in alerts_for(FAILED, s.alerts):
            enqueue(engine, alert, s.alerts)
        dispatchers = drain(engine, s.alerts)
        assert dispatchers["oncall"].failed == 1 and not pd.received
        assert len(slack.received) == 1


def test_alerter_consumes_the_bus_with_severity_routing_and_dedup(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(settings, monkeypatch, slack, pd, hook.url)
        ensure_topics(s)
        service = AlerterService(s).start()
        try:
            with EventProducer(s) as producer:
                for event in (FAILED, FAILED, SOURCE_DOWN, PENDING, LETTER, ROLLBACK):
                    producer.publish(event)  # FAILED twice: a redelivery
                producer.publish(
                    RunFailed(release_id=RID, stage="train", reason="again", producer="worker-2")
                )
                producer.publish(SUCCEEDED)
                producer.publish(SOURCE_DOWN.model_copy(update={"resolved": True}))
            wait_for(lambda: len(pd.received) >= 4, 60, "PagerDuty triggers and resolves")
            wait_for(lambda: len(slack.received) >= 7, 30, "Slack messages")
            wait_for(lambda: len(hook.received) >= 2, 30, "webhook deliveries")
        finally:
            service.stop()
    pd_events = [(b["event_action"], b["dedup_key"]) for b in pd.bodies()]
    # error severity only (run failed, watcher source down): one trigger per condition,
    # each resolved with its own key when it cleared; the repeated failure paged once
    assert sorted(pd_events) == sorted(
        [
            ("trigger", f"uptake/run_failed/{RID}"),
            ("trigger", "uptake/watcher:hf/source_failing"),
            ("resolve", f"uptake/run_failed/{RID}"),
            ("resolve", "uptake/watcher:hf/source_failing"),
        ]
    )
    kinds = [r["blocks"][0]["text"]["text"] for r in slack.bodies()]
    assert sorted(kinds) == sorted(
        [
            "ERROR: run failed",
            "ERROR: service",
            "INFO: pending approval",
            "WARNING: dead letter",
            "WARNING: rollback",
            "Resolved: run failed",
            "Resolved: service",
        ]
    )
    assert sorted(b["alert"]["kind"] for b in hook.bodies()) == ["dead_letter", "rollback"]


def _deliveries(engine, channel: str) -> list[sa.Row]:
    with engine.connect() as conn:
        t = db.alert_deliveries
        return conn.execute(sa.select(t).where(t.c.channel == channel)).all()


def test_a_malformed_channel_url_fails_the_delivery_with_the_reason(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Endpoint() as slack, Endpoint(default=202) as pd:
        s = alert_settings(settings, monkeypatch, slack, pd, "http://[::1/hook")  # InvalidURL
        monkeypatch.setenv("TEST_SLACK_URL", "hooks.slack.example/T0/B0/secret")  # no scheme
        engine = make_engine(s)
        for alert in alerts_for(LETTER, s.alerts):
            enqueue(engine, alert, s.alerts)
        dispatchers = drain(engine, s.alerts)  # raised InvalidURL out of deliver_due before
    for name in ("audit", "slack"):
        (row,) = _deliveries(engine, name)
        assert row.status == "failed" and row.attempts == 1, name  # at once, not retried
        assert row.last_error.startswith("invalid channel URL: "), row.last_error
        assert "secret" not in row.last_error  # a Slack URL is a secret: never echoed
        assert dispatchers[name].failed == 1


def test_a_channel_that_drips_its_answer_is_cut_at_its_timeout(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one byte of the status line every 0.2 s for 6 s: every read is quick, the call is not
    with (
        Endpoint() as slack,
        Endpoint(default=202) as pd,
        HostileServer("drip_headers", drip_bytes=30) as hook,
    ):
        s = alert_settings(settings, monkeypatch, slack, pd, hook.url)  # audit: timeout_s 1
        engine = make_engine(s)
        for alert in alerts_for(LETTER, s.alerts):
            enqueue(engine, alert, s.alerts)
        start = time.monotonic()
        drain(engine, s.alerts)
        took = time.monotonic() - start
    (row,) = _deliveries(engine, "audit")
    assert row.status == "failed" and row.attempts == 4  # max_attempts of 1 s each
    assert "deadline" in row.last_error, row.last_error
    assert took < 10, took  # without a total deadline: 4 x 6 s
    assert len(slack.received) == 1  # the other channels were not held up
