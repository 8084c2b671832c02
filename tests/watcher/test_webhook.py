"""``POST /hooks/hf``: constant-time secret check, then an immediate lookup of that repo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.watcher.conftest import hf_source, releases
from tests.watcher.fake_hub import FakeHub
from watcher.scheduler import HOOK_COOLDOWN_S, WatchScheduler
from watcher.server import HttpServer
from watcher.service import WatcherService
from watcher.store import Store
from watcher.webhook import build_app

SECRET = "s3cret-hook"


def hook(repo: str, *, scope: str = "repo", action: str = "create", kind: str = "model") -> dict:
    """A Hub webhook (version 3) payload, as the Hub sends it."""
    return {
        "event": {"action": action, "scope": scope},
        "repo": {
            "type": kind,
            "name": repo,
            "id": "6565f0d9e0e3e8c1b8d3a1f2",
            "private": False,
            "headSha": "0" * 40,
            "url": {
                "web": f"https://huggingface.co/{repo}",
                "api": f"https://huggingface.co/api/models/{repo}",
            },
            "owner": {"id": "6565f0d9e0e3e8c1b8d3a1f3"},
        },
        "webhook": {"id": "6565f0d9e0e3e8c1b8d3a1f4", "version": 3},
    }


def _wait(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Running:
    def __init__(self, service: WatcherService) -> None:
        self.service = service
        self.scheduler = WatchScheduler(service)
        self.http = HttpServer(build_app(service, self.scheduler.trigger_repo), "127.0.0.1", 0)
        self.url = self.http.url

    def post(self, body: Any, secret: str | None = SECRET) -> httpx.Response:
        headers = {"X-Webhook-Secret": secret} if secret is not None else {}
        return httpx.post(f"{self.url}/hooks/hf", json=body, headers=headers, timeout=5)


@pytest.fixture
def running(request, hub: FakeHub, make_settings, make_service) -> Iterator[Running]:
    hub.add("acme/old")
    hidden = hub.add("acme/Stealth-7B")
    hidden.private = True  # created privately: not listed, not in the baseline
    settings = make_settings(hf_source(hub, interval_s=60.0))  # only hooks poll during a test
    overrides = getattr(request, "param", {})  # watcher settings, through indirect params
    watcher = settings.watcher.model_copy(update={"webhook_secret": SecretStr(SECRET), **overrides})
    settings = settings.model_copy(update={"watcher": watcher})  # config is read-only
    service = make_service(settings)
    service.start()
    run = Running(service)
    run.http.start()
    run.scheduler.start()
    try:
        _wait(lambda: service.pollers["hub"].initialized())
        hub.clear_log()
        yield run
    finally:
        run.scheduler.shutdown()
        run.http.stop()


def test_wrong_or_missing_secret_is_401_and_polls_nothing(running: Running, hub: FakeHub) -> None:
    hub.add("acme/New-7B")
    assert running.post(hook("acme/New-7B"), secret="wrong").status_code == 401
    assert running.post(hook("acme/New-7B"), secret=SECRET[:-1]).status_code == 401
    assert running.post(hook("acme/New-7B"), secret=None).status_code == 401
    time.sleep(0.5)
    assert hub.requests_for("/api/") == []
    store = Store.for_settings(running.service.settings)
    assert store.release_rows() == []
    store.close()
    assert running.service.metrics.value("uptake_watcher_webhooks_total", outcome="rejected") == 3


def test_verified_hook_polls_that_repo_now_and_cannot_forge_releases(
    running: Running, hub: FakeHub
) -> None:
    new = hub.add("acme/New-7B")
    response = running.post(hook("acme/New-7B"))
    assert response.status_code == 202 and response.json()["polling"] == ["hub"]
    store = Store.for_settings(running.service.settings)
    _wait(lambda: [r["status"] for r in store.release_rows()] == ["published"])
    assert hub.list_requests() == []  # a lookup of that repo, not a full poll
    assert [r.path for r in hub.info_requests()] == ["/api/models/acme/New-7B"]

    assert running.post(hook("acme/New-7B", action="update")).status_code == 202  # duplicate
    assert running.post(hook("acme/Never-Existed")).status_code == 202  # forged name
    # private -> public flip of a repo created privately (not in the baseline)
    hub.repos["acme/Stealth-7B"].private = False
    assert (
        running.post(hook("acme/Stealth-7B", scope="repo.config", action="update")).status_code
        == 202
    )
    _wait(lambda: len(hub.info_requests()) == 4)
    _wait(lambda: len(store.release_rows()) == 2)
    time.sleep(0.3)
    assert sorted(r["repo_id"] for r in store.release_rows()) == ["acme/New-7B", "acme/Stealth-7B"]
    store.close()

    ignored = [
        running.post(hook("stranger/Model")),  # author not watched
        running.post(hook("acme/data", kind="dataset")),
        running.post(hook("acme/New-7B", scope="discussion")),
        running.post(hook("acme/New-7B", action="delete")),
    ]
    assert [r.status_code for r in ignored] == [200, 200, 200, 200]
    bad = httpx.post(
        f"{running.url}/hooks/hf", content=b"{nope", headers={"X-Webhook-Secret": SECRET}
    )
    assert bad.status_code == 400
    time.sleep(0.3)
    assert len(hub.info_requests()) == 4  # nothing ignored caused a request
    got = releases(running.service.settings, expected=2)
    assert sorted((e.repo_id, e.revision) for e in got) == [
        ("acme/New-7B", new.sha),
        ("acme/Stealth-7B", hub.repos["acme/Stealth-7B"].sha),
    ]


def test_metrics_and_health_endpoints(running: Running, hub: FakeHub) -> None:
    running.post(hook("acme/x"), secret="nope")
    metrics = httpx.get(f"{running.url}/metrics", timeout=5)
    assert metrics.status_code == 200
    text = metrics.text
    assert 'uptake_watcher_webhooks_total{outcome="rejected"} 1.0' in text
    assert 'uptake_watcher_polls_total{outcome="ok",source="hub"} 1.0' in text
    assert 'uptake_watcher_requests_total{source="hub"}' in text
    health = httpx.get(f"{running.url}/healthz", timeout=5).json()
    assert health["status"] == "ok" and health["sources"]["hub"]["initialized"]


def test_hooks_are_refused_without_a_configured_secret(
    hub: FakeHub, make_settings, make_service
) -> None:
    service = make_service(make_settings(hf_source(hub)))
    http = HttpServer(build_app(service, lambda *_: None), "127.0.0.1", 0).start()
    try:
        r = httpx.post(
            f"{http.url}/hooks/hf", json=hook("acme/x"), headers={"X-Webhook-Secret": ""}
        )
        assert r.status_code == 503 and "UPTAKE_WATCHER__WEBHOOK_SECRET" in r.text
    finally:
        http.stop()


def test_a_flood_of_valid_hooks_is_coalesced_into_few_lookups(
    running: Running, hub: FakeHub
) -> None:
    new = hub.add("acme/New-7B")
    started = time.monotonic()
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: (
                    client.post(
                        f"{running.url}/hooks/hf",
                        json=hook("acme/New-7B"),
                        headers={"X-Webhook-Secret": SECRET},
                    ).status_code
                ),
                range(500),
            )
        )
    flood_s = time.monotonic() - started
    assert codes == [202] * 500
    store = Store.for_settings(running.service.settings)
    _wait(lambda: [r["status"] for r in store.release_rows()] == ["published"])
    store.close()
    time.sleep(HOOK_COOLDOWN_S + 0.5)  # the trailing lookup, if one was queued
    lookups = len(hub.info_requests())
    # one lookup at once, then at most one per cool-down for as long as the flood lasted
    assert 1 <= lookups <= 2 + flood_s / HOOK_COOLDOWN_S, (lookups, flood_s)
    (event,) = releases(running.service.settings, expected=1)
    assert event.revision == new.sha


@pytest.mark.parametrize("running", [{"backoff_max_s": 30.0}], indirect=True)
def test_no_hook_lookups_while_a_source_backs_off(running: Running, hub: FakeHub) -> None:
    hub.add("acme/New-7B")
    hub.fail(status=429, headers={"Retry-After": "8"}, times=None)
    assert running.post(hook("acme/New-7B")).status_code == 202
    _wait(lambda: running.scheduler.backing_off("hub"))
    for _ in range(10):
        assert running.post(hook("acme/New-7B")).status_code == 202
    (refused,) = hub.info_requests()  # the ten hooks came within the 8 s: no lookup
    assert time.monotonic() - refused.at < 8.0
    hub.clear_faults()
    _wait(lambda: not running.scheduler.backing_off("hub"), timeout_s=15.0)
    assert running.post(hook("acme/New-7B")).status_code == 202
    store = Store.for_settings(running.service.settings)
    _wait(lambda: [r["status"] for r in store.release_rows()] == ["published"])
    store.close()
    assert len(hub.info_requests()) == 2
