"""Hot swap: forward and rollback under load with zero failed requests, a version that fails
to load, a missed event caught by the reconcile, the API key."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from mlflow import MlflowClient

from serving.service import ServingService
from tests.conftest import MlflowServer
from tests.serving.conftest import running, serving_settings
from tests.serving.helpers import Registrar, wait_for
from uptake.bus import EventProducer
from uptake.bus.topics import topic_for
from uptake.events import AlertRaised, ChampionChanged, decode_event
from uptake.mlflow_contract import SERVED_AT_TAG

pytestmark = pytest.mark.one_backend  # swaps under load: on one MLflow store

HEADER = "x-uptake-model-version"
PROMPT = [{"role": "user", "content": "Which statute governs the deadline?"}]
KEY_ENV = "UPTAKE_TEST_SERVING_KEY"


@dataclass
class Track:
    name: str
    versions: dict[str, str] = field(default_factory=dict)  # label -> version


@pytest.fixture(scope="module")
def track(registrar: Registrar, models_dir: dict[str, Path], tmp_path_factory) -> Track:
    """v1 (model a), v2 (model b), v3 (corrupt weights) of one registered model; v1 champion."""
    t = Track(f"swap-{uuid.uuid4().hex[:6]}")
    broken = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(models_dir["a"], broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    for label, path in (("v1", models_dir["a"]), ("v2", models_dir["b"]), ("v3", broken)):
        t.versions[label] = registrar.register(t.name, path)
    registrar.crown(t.name, t.versions["v1"])
    return t


@pytest.fixture(scope="module")
def server(
    broker: str, mlflow_server: MlflowServer, tmp_path_factory, track: Track
) -> Iterator[ServingService]:
    """Follows events only: the reconcile is too far apart to play a part here."""
    settings = serving_settings(
        broker, mlflow_server, tmp_path_factory.mktemp("home"), reconcile_interval_s=3600
    )
    for service in running(settings, [track.name]):
        wait_for(lambda s=service: s.manager.current(track.name), what="the first champion")
        yield service


def announce(service: ServingService, registrar: Registrar, track: Track, label: str) -> None:
    """What the promoter does: move the alias, then publish champion.changed."""
    previous = service.manager.current(track.name)
    registrar.crown(track.name, track.versions[label])
    with EventProducer(service.settings, producer_name="test-promoter") as producer:
        producer.publish(
            ChampionChanged(
                producer="test-promoter",
                registered_model=track.name,
                version=track.versions[label],
                previous_version=previous.version if previous else None,
                model_uri=f"models:/{track.name}/{track.versions[label]}",
                reason="rollback" if label == "v1" else "promotion",
            )
        )


@dataclass
class Load:
    """Client threads, each sending one request after the other until stopped."""

    url: str
    model: str
    threads: int = 4
    results: list[list[tuple[int, str, str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.threads):
            mine: list[tuple[int, str, str]] = []
            self.results.append(mine)
            worker = threading.Thread(target=self._run, args=(mine, i % 2 == 1), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, out: list[tuple[int, str, str]], stream: bool) -> None:
        body = {"model": self.model, "messages": PROMPT, "max_tokens": 6, "temperature": 0}
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    if stream:
                        with client.stream(
                            "POST", "/v1/chat/completions", json={**body, "stream": True}
                        ) as resp:
                            lines = list(resp.iter_lines())
                        text = _streamed_text(lines) if resp.status_code == 200 else ""
                    else:
                        resp = client.post("/v1/chat/completions", json=body)
                        text = resp.json()["choices"][0]["message"]["content"]
                    out.append((resp.status_code, resp.headers.get(HEADER, ""), text))
                except Exception as exc:  # a failed request is a result, not a test crash
                    out.append((0, "", repr(exc)))

    def seen(self) -> set[str]:
        return {h for r in self.results for _, h, _ in r[-4:]}

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)


def _streamed_text(lines: list[str]) -> str:
    import json

    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def _runs(headers: list[str]) -> list[str]:
    return [h for i, h in enumerate(headers) if i == 0 or headers[i - 1] != h]


def test_forward_and_rollback_under_load_fail_no_request(
    server: ServingService, registrar: Registrar, track: Track
) -> None:
    v1, v2 = (f"{track.name}/{track.versions[k]}" for k in ("v1", "v2"))
    load = Load(server.url, track.name).start()
    try:
        wait_for(lambda: sum(map(len, load.results)) >= 8, what="steady traffic")
        announce(server, registrar, track, "v2")
        wait_for(lambda: load.seen() == {v2}, what="every client on v2")
        announce(server, registrar, track, "v1")
        wait_for(lambda: load.seen() == {v1}, what="every client back on v1")
        time.sleep(0.5)
    finally:
        load.stop()
    results = [r for per_client in load.results for r in per_client]
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    for per_client in load.results:  # each client saw v1, then v2, then v1 again
        assert _runs([h for _, h, _ in per_client]) == [v1, v2, v1]
    texts: dict[str, set[str]] = {}
    for _, header, text in results:
        texts.setdefault(header, set()).add(text)
    # greedy decoding of one prompt: one answer per version, so no request saw a model that
    # was half loaded (or the other version's weights)
    assert {h: len(t) for h, t in texts.items()} == {v1: 1, v2: 1}
    assert texts[v1] != texts[v2]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert f'uptake_serving_swaps_total{{model="{track.name}"}} 3.0' in metrics
    assert (
        f'uptake_serving_version{{model="{track.name}",version="{track.versions["v1"]}"}} 1.0'
        in metrics
    )
    assert f'version="{track.versions["v2"]}"' not in metrics.split("uptake_serving_version")[-1]
    client = MlflowClient(server.settings.tracking_uri, server.settings.tracking_uri)
    tags = client.get_model_version(track.name, track.versions["v2"]).tags
    assert tags[SERVED_AT_TAG].startswith("20")
    ready = httpx.get(f"{server.url}/readyz")  # every served track has its champion loaded
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_a_version_that_fails_to_load_keeps_the_old_one_and_pages(
    server: ServingService, registrar: Registrar, track: Track
) -> None:
    v1 = f"{track.name}/{track.versions['v1']}"
    announce(server, registrar, track, "v3")
    wait_for(
        lambda: (
            f'uptake_serving_swap_failures_total{{model="{track.name}"}} 1.0'
            in httpx.get(f"{server.url}/metrics").text
        ),
        what="the failure counted",
    )
    body = {"model": track.name, "messages": PROMPT, "max_tokens": 4, "temperature": 0}
    resp = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200 and resp.headers[HEADER] == v1
    alert = _alert(server, track.versions["v3"])
    assert alert.component == "serving" and alert.condition == "swap_failed"
    assert alert.details["registered_model"] == track.name
    assert alert.details["serving_version"] == track.versions["v1"]
    assert alert.details["reason"] and not alert.resolved
    registrar.crown(track.name, track.versions["v1"])  # put the alias back for what follows


def _alert(service: ServingService, version: str) -> AlertRaised:
    settings = service.settings
    topic = topic_for(settings, AlertRaised)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    event = decode_event(record.value)
                    if isinstance(event, AlertRaised) and event.details.get("version") == version:
                        return event
        raise AssertionError("no swap_failed alert on the topic")
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def keyed(
    broker: str,
    mlflow_server: MlflowServer,
    tmp_path_factory,
    registrar: Registrar,
    models_dir: dict[str, Path],
) -> Iterator[tuple[ServingService, Track]]:
    """A second replica that reconciles every second and wants an API key."""
    t = Track(f"reconcile-{uuid.uuid4().hex[:6]}")
    t.versions["v1"] = registrar.register(t.name, models_dir["a"])
    t.versions["v2"] = registrar.register(t.name, models_dir["b"])
    registrar.crown(t.name, t.versions["v1"])
    settings = serving_settings(
        broker,
        mlflow_server,
        tmp_path_factory.mktemp("home"),
        reconcile_interval_s=1.0,
        api_key_env=KEY_ENV,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "s3cret-key")
        for service in running(settings, [t.name]):
            wait_for(lambda s=service: s.manager.current(t.name), what="the first champion")
            yield service, t


def test_a_missed_event_is_caught_by_the_reconcile(
    keyed: tuple[ServingService, Track], registrar: Registrar
) -> None:
    service, t = keyed
    registrar.crown(t.name, t.versions["v2"])  # no event: as if it had been lost
    wait_for(
        lambda: (
            (service.manager.current(t.name) or None)
            and service.manager.current(t.name).version == t.versions["v2"]
        ),  # type: ignore[union-attr]
        timeout_s=30,
        what="the reconcile to switch",
    )


def test_the_api_key_is_enforced(keyed: tuple[ServingService, Track]) -> None:
    service, t = keyed
    body = {"model": t.name, "messages": PROMPT, "max_tokens": 2, "temperature": 0}
    url = f"{service.url}/v1/chat/completions"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        resp = httpx.post(url, json=body, headers=headers, timeout=30)
        assert resp.status_code == 401, headers
        assert resp.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{service.url}/v1/models").status_code == 401
    ok = httpx.post(url, json=body, headers={"Authorization": "Bearer s3cret-key"}, timeout=30)
    assert ok.status_code == 200
    for public in ("/healthz", "/readyz", "/metrics"):  # probes and scrapers need no key
        assert httpx.get(f"{service.url}{public}").status_code == 200, public
    assert os.environ.get(KEY_ENV) == "s3cret-key"


def test_every_path_but_the_public_ones_needs_the_key(keyed: tuple[ServingService, Track]) -> None:
    """The key is checked in front of every route: one added later (or none at all) is
    guarded without doing anything."""
    service, _ = keyed
    service.app.add_api_route("/v1/added-later", lambda: {"open": True}, methods=["GET"])
    for path in ("/v1/added-later", "/v1/no-such-route", "/internal"):
        resp = httpx.get(f"{service.url}{path}", timeout=10)
        assert resp.status_code == 401, path
        assert resp.json()["error"]["code"] == "invalid_api_key"
    key = {"Authorization": "Bearer s3cret-key"}
    assert httpx.get(f"{service.url}/v1/added-later", headers=key).json() == {"open": True}
    missing = httpx.get(f"{service.url}/v1/no-such-route", headers=key)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
