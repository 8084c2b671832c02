"""Hostile or careless input to the watcher: bad drop folders, links, hook floods, Retry-After,
credentials in endpoints. Each becomes a skip with a reason or a bounded delay, never a stop."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from registry.alerts.rules import version_link
from tests.watcher.conftest import hf_source, releases
from tests.watcher.fake_hub import FakeHub
from tests.watcher.test_dir_source import age, dir_source, write_model
from uptake.urls import redact_urls
from watcher.faults import SourceFault
from watcher.scheduler import WatchScheduler
from watcher.service import SourceOutcome
from watcher.status import watcher_status
from watcher.store import Store


def _wait(condition, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _skips(settings) -> dict[str, str]:
    """repo -> reason column of ``uptake status``'s watcher section, for skipped repos."""
    section = watcher_status(settings)
    return {row[2]: row[5] for row in section.rows if row[4] == "skipped"}


def test_malformed_folders_are_skipped_and_the_others_published(
    tmp_path: Path, make_settings, make_service
) -> None:
    root = tmp_path / "models"
    age(write_model(root, "acme/old"))
    settings = make_settings(dir_source(root))
    service = make_service(settings)
    service.start()
    assert service.poll_source("drops").ok  # baseline

    age(write_model(root, "acme/good"))
    bad_dim = write_model(root, "acme/bad-dim")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, "x"], "data_offsets": [0, 16]}})
    (bad_dim / "model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16
    )
    age(bad_dim)
    bad_config = write_model(root, "acme/bad-config")
    (bad_config / "config.json").write_text(json.dumps({"architectures": 5}))
    age(bad_config)
    deep = write_model(root, "acme/deep-config")
    (deep / "config.json").write_text("[" * 100_000)
    age(deep)

    assert service.poll_source("drops").ok  # first sight: not yet stable
    outcome = service.poll_source("drops")
    assert outcome.ok, outcome.fault
    assert dict(outcome.result.skipped) == {
        "acme/bad-dim": "malformed",
        "acme/bad-config": "malformed",
        "acme/deep-config": "malformed",
    }
    assert [rid.split("@")[0] for rid in outcome.result.released] == ["drops:acme/good"]
    (event,) = releases(settings, expected=1)
    assert event.repo_id == "acme/good"
    skips = _skips(settings)
    assert skips["acme/bad-dim"].startswith("malformed: model.safetensors: tensor 'w'")
    assert skips["acme/bad-config"].startswith("malformed: config.json: architectures")
    assert skips["acme/deep-config"] == "malformed: config.json: nested too deeply"
    assert service.poll_source("drops").ok  # and the next polls go on


def test_links_out_of_a_model_folder_are_refused_links_inside_are_fine(
    tmp_path: Path, make_settings, make_service, monkeypatch
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    settings = make_settings(dir_source(root))
    service = make_service(settings)
    service.start()
    assert service.poll_source("drops").ok  # baseline of an empty drop folder

    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "do-not-read"}')
    leaking = write_model(root, "acme/leaking")
    (leaking / "tokenizer.json").symlink_to(secret)
    sneaky = write_model(root, "acme/sneaky")
    (sneaky / "sub").mkdir()
    (sneaky / "sub" / "tok.json").symlink_to(os.path.relpath(secret, sneaky / "sub"))
    elsewhere = write_model(tmp_path / "elsewhere", "x/model")
    (root / "acme" / "linked").symlink_to(elsewhere, target_is_directory=True)
    tidy = write_model(root, "acme/tidy")
    (tidy / "tok").mkdir()
    (tidy / "tok" / "tokenizer.json").write_text("{}")
    (tidy / "tokenizer.json").symlink_to("tok/tokenizer.json")  # stays inside: fine
    for folder in (leaking, sneaky, tidy, elsewhere):
        age(folder)

    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args, **kwargs):
        opened.append(os.path.realpath(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    service.poll_source("drops")
    outcome = service.poll_source("drops")
    monkeypatch.undo()
    assert outcome.ok, outcome.fault
    assert dict(outcome.result.skipped) == {
        "acme/leaking": "unsafe_link",
        "acme/sneaky": "unsafe_link",
        "acme/linked": "unsafe_link",
    }
    assert [rid.split("@")[0] for rid in outcome.result.released] == ["drops:acme/tidy"]
    assert str(secret) not in opened
    assert not any(p.startswith(str(elsewhere)) for p in opened)
    skips = _skips(settings)
    assert (
        skips["acme/leaking"]
        == f"unsafe_link: tokenizer.json links to {secret}, outside the folder"
    )
    assert "outside" in skips["acme/linked"]
    (event,) = releases(settings, expected=1)
    assert event.repo_id == "acme/tidy"


# -- Retry-After ----------------------------------------------------------------------------


def _http_date(seconds_from_now: float, *, naive: bool = False) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    if naive:  # formatted with "-0000": UTC by RFC 5322, a naive datetime once parsed
        return format_datetime(when.replace(tzinfo=None))
    return format_datetime(when, usegmt=True)


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        pytest.param(lambda: "315360000", 2.0, 2.0, id="ten-years"),
        pytest.param(lambda: "9999999999999", 2.0, 2.0, id="overflowing"),
        pytest.param(lambda: "9" * 400, 2.0, 2.0, id="four-hundred-digits"),
        pytest.param(lambda: _http_date(10 * 365 * 86400), 2.0, 2.0, id="http-date-in-ten-years"),
        pytest.param(lambda: _http_date(-60), 0.2, 0.2, id="http-date-past"),
        pytest.param(lambda: _http_date(30, naive=True), 2.0, 2.0, id="http-date-minus-0000"),
        pytest.param(lambda: "\u00b2", 0.2, 0.2, id="superscript-two-is-no-number"),
    ],
)
def test_retry_after_is_clamped_to_backoff_max(
    hub: FakeHub, make_settings, make_service, retry_after, low: float, high: float
) -> None:
    hub.add("acme/old")
    service = make_service(make_settings(hf_source(hub)))  # backoff 0.2 doubling, max 2.0
    hub.fail(status=429, headers={"Retry-After": retry_after()}, times=None)  # dates: made now
    outcome = service.poll_source("hub")
    assert not outcome.ok and outcome.fault.kind == "rate_limited", outcome.fault
    assert low <= outcome.retry_in_s <= high


def test_an_absurd_retry_after_never_ends_a_sources_polling(
    hub: FakeHub, make_settings, make_service
) -> None:
    hub.add("acme/old")
    service = make_service(make_settings(hf_source(hub, interval_s=0.3)))
    service.start()
    hub.fail(status=429, headers={"Retry-After": "9999999999999"}, times=1)
    scheduler = WatchScheduler(service)
    scheduler.start()
    try:
        _wait(lambda: len(hub.list_requests()) >= 2)  # the 429, then a poll after <= 2 s
        _wait(lambda: service.pollers["hub"].initialized())
    finally:
        scheduler.shutdown()
    at = [r.at for r in hub.list_requests()]
    assert at[1] - at[0] <= 2.5


def test_a_scheduling_error_never_ends_a_sources_polling(
    hub: FakeHub, make_settings, make_service, monkeypatch
) -> None:
    hub.add("acme/old")
    service = make_service(make_settings(hf_source(hub, interval_s=0.2)))
    service.start()
    answers = iter([float("inf"), float("nan"), -1.0])
    polls: list[float] = []
    real_poll = service.poll_source

    def poll(name: str) -> SourceOutcome:
        polls.append(time.monotonic())
        delay = next(answers, None)
        if delay is None:
            return real_poll(name)
        return SourceOutcome(name, False, fault=SourceFault("server_error", "x"), retry_in_s=delay)

    monkeypatch.setattr(service, "poll_source", poll)
    scheduler = WatchScheduler(service)
    scheduler.start()
    try:
        _wait(lambda: len(polls) >= 5)
    finally:
        scheduler.shutdown()
    assert service.pollers["hub"].initialized()


# -- credentials in endpoints ---------------------------------------------------------------


def test_userinfo_in_an_endpoint_is_used_but_never_published_or_logged(
    hub: FakeHub, make_settings, make_service, caplog
) -> None:
    hub.add("acme/old")
    secret_url = hub.url.replace("http://", "http://mirror-user:s3cret-token@")
    settings = make_settings(hf_source(hub, endpoint=secret_url))
    service = make_service(settings)
    service.start()
    assert service.poll_source("hub").ok, "a mirror behind basic auth can be polled"
    assert (
        hub.list_requests()[0].authorization
        == "Basic " + base64.b64encode(b"mirror-user:s3cret-token").decode()
    )
    hub.add("acme/new")
    hub.fail(status=503, times=1)
    failed = service.poll_source("hub")
    assert not failed.ok and "s3cret" not in str(failed.fault)
    assert service.poll_source("hub").ok
    (event,) = releases(settings, expected=1)
    assert event.endpoint == hub.url
    assert "s3cret" not in event.model_dump_json()
    store = Store.for_settings(settings)
    assert "s3cret" not in (store.source_state("hub").last_error or "")
    store.close()
    assert "s3cret" not in caplog.text


def test_alert_links_carry_no_credentials() -> None:
    (link,) = version_link("https://ops:pw@mlflow.internal:5000/", "uptake-legal", "3")
    assert link.href == "https://mlflow.internal:5000/#/models/uptake-legal/versions/3"
    assert redact_urls("GET http://a:b@c@host/x failed") == "GET http://host/x failed"
