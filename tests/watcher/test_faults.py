"""Hub faults: nothing published from a failed poll, per-source backoff, metrics, alerts."""

from __future__ import annotations

import itertools
import time

import pytest

from tests.watcher.conftest import events, hf_source, metric
from tests.watcher.fake_hub import FakeHub
from watcher.scheduler import WatchScheduler
from watcher.store import Store

BACKOFF = [0.2, 0.4, 0.8, 1.6]  # backoff_initial_s 0.2 doubling, capped at 2.0


def _info(path: str, query: dict) -> bool:
    return path.startswith("/api/models/")


@pytest.mark.parametrize(
    ("fault", "kind", "retry_after"),
    [
        pytest.param(
            {"status": 429, "headers": {"Retry-After": "1"}}, "rate_limited", 1.0, id="429"
        ),
        pytest.param(
            {
                "status": 429,
                "headers": {
                    "RateLimit": '"api";r=0;t=2',
                    "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
                },
            },
            "rate_limited",
            2.0,
            id="429-ratelimit-header",
        ),
        pytest.param({"status": 503}, "server_error", None, id="503"),
        pytest.param({"status": 500, "match": _info}, "server_error", None, id="500-model-info"),
        pytest.param({"kind": "slow", "delay_s": 1.6}, "timeout", None, id="timeout"),
        pytest.param({"kind": "malformed"}, "malformed", None, id="malformed-json"),
        pytest.param({"kind": "bad_item"}, "malformed", None, id="malformed-item"),
    ],
)
def test_fault_publishes_nothing_backs_off_and_alerts_after_n(
    hub: FakeHub, make_settings, make_service, fault, kind, retry_after
) -> None:
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, timeout_s=1.0), alert_after=3)
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok  # baseline
    hub.add("acme/new")
    hub.fail(times=None, **fault)

    delays = []
    for _ in range(4):
        outcome = service.poll_source("hub")
        assert not outcome.ok and outcome.fault.kind == kind, outcome.fault
        delays.append(outcome.retry_in_s)
    expected = [max(d, retry_after or 0.0) for d in BACKOFF]
    assert delays == pytest.approx(expected, abs=0.01)
    assert metric(service, "uptake_watcher_failures_total", source="hub", kind=kind) == 4
    assert metric(service, "uptake_watcher_polls_total", source="hub", outcome="failed") == 4
    assert metric(service, "uptake_watcher_consecutive_failures", source="hub") == 4
    store = Store.for_settings(settings)
    state = store.source_state("hub")
    assert state.consecutive_failures == 4 and state.alert_firing
    assert store.release_rows() == [] and "acme/new" not in store.known("hub")

    hub.clear_faults()
    recovered = service.poll_source("hub")
    assert recovered.ok and len(recovered.result.released) == 1
    assert store.source_state("hub").consecutive_failures == 0
    store.close()

    got = events(settings, expected=3)
    alerts = [(k, e) for k, e in got if e.type == "alert.raised"]
    released = [e for _, e in got if e.type == "release.detected"]
    assert [e.repo_id for e in released] == ["acme/new"]
    assert [e.resolved for _, e in alerts] == [False, True]  # raised once (not per failure)
    assert {k for k, _ in alerts} == {"watcher:hub:source_failing"}
    raised = alerts[0][1]
    assert raised.details["kind"] == kind and raised.details["consecutive_failures"] == "3"
    assert raised.severity == "error"


def _wait(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_scheduler_honours_retry_after_then_resumes_interval(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, interval_s=0.3))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    hub.clear_log()
    hub.fail(status=429, headers={"Retry-After": "1"}, times=2)
    hub.add("acme/new")
    scheduler = WatchScheduler(service)
    scheduler.start()
    store = Store.for_settings(settings)
    try:
        _wait(lambda: [r["status"] for r in store.release_rows()] == ["published"])
        _wait(lambda: len(hub.list_requests()) >= 6)
    finally:
        scheduler.shutdown()
        store.close()
    at = [r.at for r in hub.list_requests()]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps[0] >= 0.95 and gaps[1] >= 0.95  # Retry-After: 1, not the 0.2 s backoff
    assert all(0.2 <= g < 0.9 for g in gaps[2:5])  # back to the 0.3 s interval


def test_one_failing_source_never_stops_another(make_settings, make_service) -> None:
    with FakeHub() as good, FakeHub() as bad:
        good.add("acme/old")
        bad.add("acme/old")
        bad.fail(kind="slow", delay_s=2.0, times=None)  # hangs past its 0.3 s timeout
        settings = make_settings(
            hf_source(good, name="good", interval_s=0.3),
            hf_source(bad, name="bad", interval_s=0.3, timeout_s=0.3),
            alert_after=2,
            backoff_initial_s=0.1,
            backoff_max_s=0.2,
        )
        service = make_service(settings)
        service.start()
        scheduler = WatchScheduler(service)
        scheduler.start()
        store = Store.for_settings(settings)
        try:
            _wait(lambda: service.pollers["good"].initialized())
            new = good.add("acme/fresh")
            _wait(lambda: [r["repo_id"] for r in store.release_rows()] == ["acme/fresh"])
            _wait(lambda: (s := store.source_state("bad")) is not None and s.alert_firing)
        finally:
            scheduler.shutdown()
        assert not service.pollers["bad"].initialized()
        assert store.source_state("good").consecutive_failures == 0
        store.close()
    got = events(settings, expected=2)
    kinds = sorted((e.type, k) for k, e in got)
    assert kinds == [
        ("alert.raised", "watcher:bad:source_failing"),
        ("release.detected", "acme/fresh"),
    ]
    assert [e.revision for _, e in got if e.type == "release.detected"] == [new.sha]
