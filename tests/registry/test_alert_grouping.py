"""Alert storms: dead letters grouped into one incident per (consumer group, topic, error kind).

Before grouping, each dead letter was its own incident: 1,000 bad messages paged 1,000 times.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from registry import db
from registry.alerts.grouping import alert_groups
from registry.alerts.router import enqueue, flush_groups
from registry.alerts.rules import alerts_for
from registry.alerts.service import AlerterService
from registry.db import make_engine
from tests.registry.helpers import Endpoint, wait_for
from tests.registry.test_alerts import PD_KEY, alert_settings, drain
from uptake.bus import EventProducer, ensure_topics
from uptake.events import DeadLetter
from uptake.settings import Settings


def letter(offset: int, topic: str = "uptake.runs", kind: str = "invalid_json") -> DeadLetter:
    return DeadLetter(
        origin_topic=topic,
        origin_partition=offset % 3,
        origin_offset=offset,
        origin_key="k",
        consumer_group="uptake-promoter",
        error_kind=kind,
        error=f"bad message #{offset}",
        payload="{",
    )


GROUP = "uptake/dead_letter/uptake-promoter/uptake.runs/invalid_json"


def test_a_group_waits_updates_with_the_count_and_resolves_when_quiet(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(db, "now", lambda: clock[0])
    grouping = {
        "group_wait_s": 30,
        "group_interval_s": 300,
        "repeat_interval_s": 3600,
        "resolve_after_s": 900,
        "max_examples": 3,
    }
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(
            settings,
            monkeypatch,
            slack,
            pd,
            hook.url,
            severities={"dead_letter": "error"},
            grouping={"dead_letter": grouping},
        )
        engine = make_engine(s)

        def send(offsets: range) -> None:
            for i in offsets:
                for alert in alerts_for(letter(i), s.alerts):
                    enqueue(engine, alert, s.alerts)

        def tick(seconds: float) -> None:
            clock[0] += seconds
            flush_groups(engine, s.alerts)
            drain(engine, s.alerts)

        send(range(10))
        tick(10)
        assert not pd.received and not slack.received  # within group_wait: collecting
        tick(25)  # group_wait passed
        (first,) = pd.bodies()
        assert first["event_action"] == "trigger" and first["dedup_key"] == GROUP
        assert first["payload"]["custom_details"]["count"] == "10"
        assert first["payload"]["custom_details"]["latest"].count("\n") == 2  # 3 examples
        assert "bad message #9" in first["payload"]["summary"]
        assert slack.bodies()[0]["text"].count("10 × dead letter") == 1

        send(range(10, 50))
        send(range(0, 50))  # redelivered: each message counts once
        tick(60)
        assert len(pd.received) == 1  # within group_interval: no update yet
        tick(300)
        update = pd.bodies()[1]
        assert update["event_action"] == "trigger" and update["dedup_key"] == GROUP
        assert update["payload"]["custom_details"]["count"] == "50"
        assert update["payload"]["custom_details"]["new_since_last_notice"] == "40"

        tick(600)  # 900 s without a new dead letter: resolved
        resolve = pd.bodies()[2]
        assert resolve == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": GROUP}
        assert len(slack.received) == 3 and len(hook.received) == 3

        send(range(50, 51))  # after the quiet window: a new incident, counted from 1
        tick(31)
        assert pd.bodies()[3]["payload"]["custom_details"]["count"] == "1"


def test_a_trickle_updates_at_the_group_interval_and_a_quiet_open_group_repeats(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [2_000_000.0]
    monkeypatch.setattr(db, "now", lambda: clock[0])
    rule = {"group_wait_s": 0, "group_interval_s": 10, "repeat_interval_s": 100}
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(
            settings, monkeypatch, slack, pd, hook.url, grouping={"dead_letter": rule}
        )
        engine = make_engine(s)
        for i in range(100):  # a steady trickle: one bad message every 5 s
            clock[0] += 5
            for alert in alerts_for(letter(i), s.alerts):
                enqueue(engine, alert, s.alerts)
        for _ in range(2):  # then quiet, still open (resolve_after_s 900): repeated every 100 s
            clock[0] += 100
            flush_groups(engine, s.alerts)
        drain(engine, s.alerts)
    counts = [int(b["alert"]["details"]["count"]) for b in hook.bodies()]
    # the first at once, then at most one update per 10 s: 500 s / 10 s, never 100 pages
    assert 45 <= len(counts) - 2 <= 51, len(counts)
    assert counts == sorted(counts) and counts[-2:] == [100, 100]  # the final count, repeated


def test_a_thousand_dead_letters_page_a_handful_of_times(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = {  # an update at most every 20 s while the storm lasts, resolved 3 s after it
        "group_wait_s": 1.0,
        "group_interval_s": 20.0,
        "repeat_interval_s": 3600.0,
        "resolve_after_s": 3.0,
    }
    with Endpoint() as slack, Endpoint(default=202) as pd, Endpoint() as hook:
        s = alert_settings(
            settings,
            monkeypatch,
            slack,
            pd,
            hook.url,
            severities={"dead_letter": "error"},  # PagerDuty takes error and up
            grouping={"dead_letter": rule},
        )
        ensure_topics(s)
        service = AlerterService(s).start()
        engine = service.engine
        try:
            with EventProducer(s) as producer:
                for i in range(1000):  # two storms at once: 600 + 400
                    if i % 5 < 3:
                        producer.publish(letter(i))
                    else:
                        producer.publish(letter(i, "uptake.decisions", "unknown_type"))

            def counted() -> int:
                with engine.connect() as conn:
                    return conn.execute(sa.select(sa.func.sum(alert_groups.c.count))).scalar()

            start = time.monotonic()
            wait_for(lambda: counted() == 1000, 120, "1,000 dead letters counted")
            print(f"1,000 dead letters handled in {time.monotonic() - start:.1f} s")
            wait_for(
                lambda: sum(b["event_action"] == "resolve" for b in pd.bodies()) == 2,
                60,
                "both groups resolved after a quiet window",
            )
        finally:
            service.stop()
    by_key: dict[str, list[dict]] = {}
    for body in pd.bodies():
        by_key.setdefault(body["dedup_key"], []).append(body)
    assert sorted(by_key) == [
        "uptake/dead_letter/uptake-promoter/uptake.decisions/unknown_type",
        GROUP,
    ]
    for key, expected in ((GROUP, "600"), (sorted(by_key)[0], "400")):
        *triggers, resolve = by_key[key]
        assert resolve["event_action"] == "resolve"
        assert 1 <= len(triggers) <= 6, len(triggers)  # a handful, not hundreds
        assert triggers[-1]["payload"]["custom_details"]["count"] == expected
    total = len(pd.received) + len(slack.received) + len(hook.received)
    assert total <= 3 * 2 * 7, total  # three channels, two groups: was 3,000 deliveries
    assert len(slack.received) == len(pd.received) == len(hook.received)
