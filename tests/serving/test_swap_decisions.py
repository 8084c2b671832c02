"""The latest decision wins over a load in flight, loads have deadlines, a corrupt cached copy
is fetched again, and a broken champion is retried with backoff under one alert (issue 20,
defects 6 and 7).

One server follows four registered models, one per test. Its engine is the real
transformers engine behind a gate (a load of a gated version waits for the test, as a large
checkpoint's load would), and its champion source the real MLflow one, whose download of a
gated version hangs as a stalled artifact store's would.
"""

from __future__ import annotations

import asyncio
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

from serving.champions import ChampionSource
from serving.engine import Engine, LoadedVersion
from serving.service import ServingService
from tests.conftest import MlflowServer
from tests.serving.conftest import serving_settings
from tests.serving.helpers import Registrar, wait_for
from tests.serving.test_swap import announce
from uptake.bus.topics import topic_for
from uptake.events import AlertRaised, decode_event
from uptake.models import ModelOrigin

pytestmark = pytest.mark.one_backend

HEADER = "x-uptake-model-version"
PROMPT = [{"role": "user", "content": "Which statute governs the deadline?"}]
RETRY_S = 0.4
# a download's deadline: well above a real tiny-model download (under 1 s idle, a few seconds on
# a loaded CI box, where 3 s once cut a real first download short), far below a hung one
DOWNLOAD_TIMEOUT_S = 10.0


@dataclass
class Track:
    name: str
    versions: dict[str, str] = field(default_factory=dict)  # label -> version


class GatedEngine:
    """The real engine; a load of a version in ``gates`` waits until its gate opens."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.libraries = inner.libraries
        self.gates: dict[str, threading.Event] = {}
        self.loads: list[str] = []  # "model/version" of every load begun
        self.cancelled: list[str] = []

    async def load(
        self,
        registered_model: str,
        version: str,
        model_dir: Path,
        origin: ModelOrigin | None = None,
    ) -> LoadedVersion:
        label = f"{registered_model}/{version}"
        self.loads.append(label)
        gate = self.gates.get(label)
        try:
            while gate is not None and not gate.is_set():
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled.append(label)
            raise
        return await self.inner.load(registered_model, version, model_dir, origin)

    async def aclose(self) -> None:
        await self.inner.aclose()


class HangingSource(ChampionSource):
    """MLflow's champion source; a download of a version in ``hung`` never returns (until the
    test releases it)."""

    hung: set[str]
    release: threading.Event
    fetched: list[str]  # "model/version" of every download from MLflow (not from the cache)

    def download(self, model: str, version: str) -> Path:
        if f"{model}/{version}" in self.hung:
            self.release.wait(120)
            raise OSError("the test released a hung download")
        if self.cached(model, version) is None:
            self.fetched.append(f"{model}/{version}")
        return super().download(model, version)


def corrupt_copy(source: Path, into: Path) -> Path:
    shutil.copytree(source, into)
    (into / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    return into


@pytest.fixture(scope="module")
def tracks(
    registrar: Registrar, models_dir: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Track]:
    """Per test a model with v1 (model a, champion), v2 (model b), v3 (model a again) and
    v4 (corrupt weights in MLflow itself)."""
    broken = corrupt_copy(models_dir["a"], tmp_path_factory.mktemp("broken") / "model")
    out = {}
    for key in ("rollback", "deadline", "cached", "backoff"):
        t = Track(f"{key}-{uuid.uuid4().hex[:6]}")
        for label, path in (
            ("v1", models_dir["a"]),
            ("v2", models_dir["b"]),
            ("v3", models_dir["a"]),
            ("v4", broken),
        ):
            t.versions[label] = registrar.register(t.name, path)
        registrar.crown(t.name, t.versions["v1"])
        out[key] = t
    return out


@pytest.fixture(scope="module")
def server(
    broker: str,
    mlflow_server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
    tracks: dict[str, Track],
    models_dir: dict[str, Path],
) -> Iterator[ServingService]:
    home = tmp_path_factory.mktemp("home")
    cached = tracks["cached"]
    # a copy of v3 left corrupt in the cache (a disk error, a copy cut short by an older
    # release that did not write manifests): it must be fetched again, once
    corrupt_copy(models_dir["a"], home / "serving" / cached.name / cached.versions["v3"])
    settings = serving_settings(
        broker,
        mlflow_server,
        home,
        reconcile_interval_s=0.5,
        retry_failed_s=RETRY_S,
        retry_failed_max_s=30.0,
        download_timeout_s=DOWNLOAD_TIMEOUT_S,
        torch_threads=1,
    )
    names = [t.name for t in tracks.values()]
    service = ServingService(settings, models=names)
    service.manager.engine = GatedEngine(service.manager.engine)
    source = HangingSource(settings.tracking_uri, settings.state_dir / "serving")
    source.hung, source.release, source.fetched = set(), threading.Event(), []
    service.manager.source = source
    try:
        for started in running_service(service):
            for name in names:
                wait_for(lambda s=started, n=name: s.manager.current(n), what=f"{name}'s champion")
            yield started
            # end the hung download before the service stops: stopping waits for its loads
            # (a minute of teardown, when the download was released only after the stop)
            source.release.set()
    finally:
        source.release.set()


def running_service(service: ServingService) -> Iterator[ServingService]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


def engine(service: ServingService) -> GatedEngine:
    assert isinstance(service.manager.engine, GatedEngine)
    return service.manager.engine


def source(service: ServingService) -> HangingSource:
    assert isinstance(service.manager.source, HangingSource)
    return service.manager.source


def answered_by(service: ServingService, track: Track) -> str:
    body = {"model": track.name, "messages": PROMPT, "max_tokens": 2, "temperature": 0}
    resp = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.headers[HEADER].rsplit("/", 1)[1]


def alerts(service: ServingService, model: str, settle_s: float = 1.0) -> list[AlertRaised]:
    """Every swap_failed alert about ``model`` on the topic, in order."""
    settings = service.settings
    topic = topic_for(settings, AlertRaised)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    found: list[AlertRaised] = []
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            for records in consumer.poll(timeout_ms=200).values():
                quiet_since = time.monotonic()
                for record in records:
                    event = decode_event(record.value)
                    if (
                        isinstance(event, AlertRaised)
                        and event.details.get("registered_model") == model
                    ):
                        found.append(event)
    finally:
        consumer.close()
    return found


def failures(service: ServingService, model: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'uptake_serving_swap_failures_total{{model="{model}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_a_rollback_during_a_load_wins_and_the_resolved_alert_names_it(
    server: ServingService, registrar: Registrar, tracks: dict[str, Track]
) -> None:
    t = tracks["rollback"]
    v1, v2, v4 = (f"{t.name}/{t.versions[k]}" for k in ("v1", "v2", "v4"))
    announce(server, registrar, t, "v4")  # a broken version: an open alert
    wait_for(lambda: failures(server, t.name) >= 1, what="the broken version's failure")
    gate = engine(server).gates.setdefault(v2, threading.Event())
    announce(server, registrar, t, "v2")  # a forward swap whose load takes its time
    wait_for(lambda: v2 in engine(server).loads, what="the load of v2 to begin")
    announce(server, registrar, t, "v1")  # the rollback, while v2 is loading
    wait_for(lambda: v2 in engine(server).cancelled, timeout_s=10, what="v2's load cancelled")
    assert answered_by(server, t) == t.versions["v1"]
    gate.set()  # had the load gone on, it would complete now
    time.sleep(2.0)
    assert answered_by(server, t) == t.versions["v1"]
    assert engine(server).loads.count(v1) == 1  # v1 was never closed and reloaded
    assert engine(server).loads.count(v2) == 1
    found = alerts(server, t.name)
    raised = [a for a in found if not a.resolved]
    resolved = [a for a in found if a.resolved]
    assert [a.details["version"] for a in raised] == [t.versions["v4"]]
    assert [a.details["version"] for a in resolved] == [t.versions["v1"]], resolved
    assert v4.rsplit("/", 1)[1] not in {a.details["version"] for a in resolved}


def test_a_hung_download_fails_at_its_deadline(
    server: ServingService, registrar: Registrar, tracks: dict[str, Track]
) -> None:
    t = tracks["deadline"]
    source(server).hung.add(f"{t.name}/{t.versions['v2']}")
    started = time.monotonic()
    announce(server, registrar, t, "v2")
    wait_for(
        lambda: failures(server, t.name) >= 1,
        timeout_s=3 * DOWNLOAD_TIMEOUT_S,
        what="the deadline to fail it",
    )
    assert time.monotonic() - started < 2 * DOWNLOAD_TIMEOUT_S
    assert answered_by(server, t) == t.versions["v1"]  # the old version kept answering
    alert = next(a for a in alerts(server, t.name) if not a.resolved)
    assert alert.details["version"] == t.versions["v2"]
    assert f"took longer than {DOWNLOAD_TIMEOUT_S:.0f}s" in alert.details["reason"]
    announce(server, registrar, t, "v3")  # the follower is free: the next decision is served
    wait_for(lambda: answered_by(server, t) == t.versions["v3"], timeout_s=30, what="v3 served")


def test_a_corrupt_cached_copy_is_downloaded_again_once(
    server: ServingService, registrar: Registrar, tracks: dict[str, Track]
) -> None:
    t = tracks["cached"]
    announce(server, registrar, t, "v3")
    wait_for(lambda: answered_by(server, t) == t.versions["v3"], timeout_s=60, what="v3 served")
    assert failures(server, t.name) == 0
    label = f"{t.name}/{t.versions['v3']}"
    assert source(server).fetched.count(label) == 1  # the cached copy failed: fetched once
    copy = server.settings.state_dir / "serving" / t.name / t.versions["v3"]
    assert (copy / ".uptake-manifest.json").is_file()


def test_a_broken_champion_is_retried_with_backoff_under_one_alert(
    server: ServingService, registrar: Registrar, tracks: dict[str, Track]
) -> None:
    t = tracks["backoff"]
    announce(server, registrar, t, "v4")
    wait_for(lambda: failures(server, t.name) >= 1, what="the first failure")
    time.sleep(4.0)  # with the reconcile every 0.5 s: ~8 tries if every one were made
    tried = failures(server, t.name)
    # tries at 0, 0.4, 1.2, 2.8 s (doubling) and maybe 6 s: never more than five
    assert 2 <= tried <= 5, tried
    assert answered_by(server, t) == t.versions["v1"]
    found = alerts(server, t.name)
    assert len([a for a in found if not a.resolved]) == 1, [a.summary for a in found]
    label = f"{t.name}/{t.versions['v4']}"
    assert source(server).fetched.count(label) == 2  # fetched again once, not every try
