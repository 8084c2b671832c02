"""``uptake watch`` as a user runs it: real processes, the fake Hub, the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from tests.core.cli_helpers import ROOT, clean_env, run_uptake, uptake_argv
from tests.watcher.conftest import events, releases
from tests.watcher.fake_hub import FakeHub
from tests.watcher.test_webhook import hook
from uptake.settings import Settings
from watcher.health import stack_probe


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    t = settings.kafka.topics
    return {
        "UPTAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "UPTAKE_KAFKA__TOPICS__RELEASES": t.releases,
        "UPTAKE_KAFKA__TOPICS__RUNS": t.runs,
        "UPTAKE_KAFKA__TOPICS__DECISIONS": t.decisions,
        "UPTAKE_KAFKA__TOPICS__DLQ": t.dlq,
        **extra,
    }


def _config(path: Path, hub: FakeHub, **source: object) -> Path:
    data = {
        "sources": [
            {
                "name": "hub",
                "kind": "hf",
                "endpoint": hub.url,
                "authors": ["acme", "beta"],
                "interval_s": 60,
                "timeout_s": 2,
                "filters": {"pipeline_tags": ["text-generation"], "exclude": ["*-GGUF"]},
                **source,
            }
        ],
        "watcher": {"backoff_initial_s": 0.1, "alert_after": 2},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_watch_once_publishes_each_new_text_generation_repo_once(
    hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    hub.add("acme/Old-1B")
    hub.add("beta/Old-2B")
    config = _config(tmp_path / "watcher.yaml", hub)
    home = tmp_path / "home"
    env = _env(settings)

    first = run_uptake("watch", "--once", "--config", str(config), home=home, **env)
    assert first.returncode == 0, first.stderr
    assert "baseline" in first.stdout

    hub.add("acme/New-A-7B")
    hub.add("beta/New-B-3B")
    hub.add("acme/New-A-7B-GGUF")
    hub.add("beta/Painter", pipeline_tag="text-to-image")
    second = run_uptake("watch", "--once", "--config", str(config), home=home, **env)
    assert second.returncode == 0, second.stderr
    third = run_uptake("watch", "--once", "--config", str(config), home=home, **env)
    assert third.returncode == 0, third.stderr

    got = releases(settings, expected=2)
    assert sorted(e.repo_id for e in got) == ["acme/New-A-7B", "beta/New-B-3B"]
    assert len({e.release_id for e in got}) == 2

    status = run_uptake(
        "status", "--json", "--timeout", "2", "--config", str(config), home=home, **env
    )
    report = json.loads(status.stdout)
    (section,) = [s for s in report["sections"] if s["name"] == "watcher"]
    assert section["error"] is None
    assert sorted(r["repo_id"] for r in section["data"]["releases"]) == [
        "acme/New-A-7B",
        "beta/New-B-3B",
    ]
    assert {(s["repo_id"], s["reason"]) for s in section["data"]["skips"]} == {
        ("acme/New-A-7B-GGUF", "excluded"),
        ("beta/Painter", "pipeline_tag"),
    }


def test_watch_once_fails_with_one_line_per_broken_source(
    hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    hub.fail(status=503, times=None)
    config = _config(tmp_path / "watcher.yaml", hub)
    result = run_uptake("watch", "--once", "--config", str(config), home=tmp_path, **_env(settings))
    assert result.returncode == 1
    assert "error: source hub: server_error:" in result.stderr and "HTTP 503" in result.stderr
    assert "Traceback" not in result.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  - {name: hub, kind: hf, autors: [acme]}\n")
    typo = run_uptake("watch", "--once", "--config", str(bad), home=tmp_path, **_env(settings))
    assert typo.returncode == 2
    assert typo.stderr.strip() == f"error: invalid config {bad}: sources.0.hf.autors: unknown field"


def test_watch_service_serves_hooks_and_metrics_and_stops_on_sigterm(
    hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    hub.add("acme/Old-1B")
    config = _config(tmp_path / "watcher.yaml", hub)
    home = tmp_path / "home"
    env = _env(settings, UPTAKE_WATCHER__WEBHOOK_SECRET="hook-secret", UPTAKE_WATCHER__PORT="0")
    log = (tmp_path / "watch.log").open("w")
    proc = subprocess.Popen(
        [*uptake_argv("watch", "--config", str(config))],
        env=clean_env(home, **env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    probe_settings = settings.model_copy(update={"home": home})
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            url = stack_probe(probe_settings, proc.pid)
            time.sleep(0.2)
        assert url, (tmp_path / "watch.log").read_text()
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}/healthz", timeout=5).json()["sources"]["hub"]["initialized"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        hub.add("beta/Hooked-7B")
        r = httpx.post(
            f"{url}/hooks/hf",
            json=hook("beta/Hooked-7B"),
            headers={"X-Webhook-Secret": "hook-secret"},
        )
        assert r.status_code == 202
        (event,) = releases(settings, expected=1)  # well before the 1 m interval
        assert event.repo_id == "beta/Hooked-7B"
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'uptake_watcher_releases_published_total{source="hub"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert not (home / "watcher.json").exists()
    assert [k for k, _ in events(settings, expected=1)] == ["beta/Hooked-7B"]
