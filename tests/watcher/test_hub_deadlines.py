"""Hub calls end: a slow-drip answer within ``timeout_s`` as a whole, an oversize one at
``max_response_bytes``; both are source faults, and the source keeps polling afterwards.

The real ``huggingface_hub`` client talks to the loopback fake hub; the drip sends the real
answer one byte every 0.2 s, so no per-read timeout ever trips.
"""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from tests.watcher.conftest import events, hf_source, metric
from tests.watcher.fake_hub import FakeHub
from uptake.watcher_config import HfSourceConfig
from watcher.scheduler import WatchScheduler
from watcher.store import Store

TIMEOUT_S = 1.0
SLACK_S = 1.5  # the poll's own work and a loaded CI machine
CAP = 64 << 10


def _list(path: str, query: dict) -> bool:
    return path == "/api/models"


def _info(path: str, query: dict) -> bool:
    return path.startswith("/api/models/")


def _baseline(hub: FakeHub, make_settings, make_service, **source):
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, timeout_s=TIMEOUT_S, **source))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    hub.add("acme/new")
    return settings, service


def _recovers(hub: FakeHub, settings, service) -> None:
    """The next poll against a healthy hub takes the lock and publishes the new repo."""
    hub.clear_faults()
    recovered = service.poll_source("hub")
    assert recovered.ok, recovered.fault
    assert len(recovered.result.released) == 1
    released = [e for _, e in events(settings, expected=1) if e.type == "release.detected"]
    assert [e.repo_id for e in released] == ["acme/new"]


@pytest.mark.parametrize("match", [_list, _info], ids=["list_models", "model_info"])
def test_slow_drip_answer_ends_at_the_deadline_as_a_timeout(
    hub: FakeHub, make_settings, make_service, match
) -> None:
    settings, service = _baseline(hub, make_settings, make_service)
    hub.fail(kind="drip", drip_s=0.2, times=None, match=match)
    hub.clear_log()

    started = time.monotonic()
    outcome = service.poll_source("hub")
    elapsed = time.monotonic() - started

    assert elapsed < TIMEOUT_S + SLACK_S, f"poll took {elapsed:.1f}s"
    assert not outcome.ok and outcome.fault.kind == "timeout", outcome.fault
    assert "no complete answer in 1s" in outcome.fault.message
    assert len([r for r in hub.requests_for() if match(r.path, r.query)]) == 1  # not retried
    assert metric(service, "uptake_watcher_failures_total", source="hub", kind="timeout") == 1
    store = Store.for_settings(settings)
    try:
        assert store.release_rows() == [] and "acme/new" not in store.known("hub")
    finally:
        store.close()
    _recovers(hub, settings, service)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("match", [_list, _info], ids=["list_models", "model_info"])
def test_oversize_answer_is_too_large(
    hub: FakeHub, make_settings, make_service, match, chunked
) -> None:
    settings, service = _baseline(hub, make_settings, make_service, max_response_bytes=CAP)
    hub.fail(kind="oversize", size=4 * CAP, chunked=chunked, times=None, match=match)
    hub.clear_log()

    outcome = service.poll_source("hub")

    assert not outcome.ok and outcome.fault.kind == "too_large", outcome.fault
    assert f"{CAP} bytes" in outcome.fault.message
    assert len([r for r in hub.requests_for() if match(r.path, r.query)]) == 1  # not retried
    assert metric(service, "uptake_watcher_failures_total", source="hub", kind="too_large") == 1
    assert outcome.retry_in_s == pytest.approx(0.2)  # the per-source backoff
    # an answer just under the cap is read whole
    hub.clear_faults()
    hub.fail(kind="oversize", size=CAP - 1, chunked=chunked, times=None, match=match)
    padded = service.poll_source("hub")
    assert padded.ok and len(padded.result.released) == 1, padded.fault
    released = [e for _, e in events(settings, expected=1) if e.type == "release.detected"]
    assert [e.repo_id for e in released] == ["acme/new"]


def test_scheduled_polling_goes_on_after_a_drip(hub: FakeHub, make_settings, make_service) -> None:
    """The drip no longer holds the source's lock: the scheduler's next poll publishes."""
    hub.add("acme/old")
    settings = make_settings(hf_source(hub, timeout_s=TIMEOUT_S, interval_s=0.3))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok
    hub.fail(kind="drip", drip_s=0.2, times=1, match=_list)
    hub.add("acme/new")
    scheduler = WatchScheduler(service)
    store = Store.for_settings(settings)
    started = time.monotonic()
    scheduler.start()
    try:
        while [r["status"] for r in store.release_rows()] != ["published"]:
            assert time.monotonic() - started < 3 * TIMEOUT_S + SLACK_S, "still not published"
            time.sleep(0.05)
    finally:
        scheduler.shutdown()
        store.close()
    assert metric(service, "uptake_watcher_failures_total", source="hub", kind="timeout") == 1


def test_response_cap_setting() -> None:
    base = {"name": "hub", "kind": "hf", "authors": ["acme"]}
    assert HfSourceConfig.model_validate(base).max_response_bytes == 16 << 20
    assert HfSourceConfig.model_validate({**base, "max_response_bytes": 1}).max_response_bytes == 1
    with pytest.raises(ValidationError, match="max_response_bytes"):
        HfSourceConfig.model_validate({**base, "max_response_bytes": 0})
