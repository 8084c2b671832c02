"""``uptake serve --engine vllm`` end to end: the serving app and its swap manager over the vLLM
engine, each version a stand-in vLLM server, the versions registered in the real test MLflow.

Under a steady load a forward swap and a rollback must fail no request, switch the version
header in order, and leave exactly one server per current version (none after stop).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import MlflowServer
from tests.serving.conftest import serving_settings
from tests.serving.helpers import Registrar, wait_for
from tests.serving.vllm_standin import STANDIN, processes_named, wait_gone, write_checkpoint
from uptake.serving_config import VllmConfig

HEADER = "x-uptake-model-version"
# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]


def answer_text(resp: httpx.Response) -> str:
    """The completion's text, from a JSON answer or from its SSE chunks."""
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        return resp.json()["choices"][0]["message"]["content"]
    text = ""
    for line in resp.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


class Load:
    """Closed-loop clients in a thread of their own: each sends a request when its last ends."""

    def __init__(self, url: str, model: str, clients: int) -> None:
        self.url, self.model, self.clients = url, model, clients
        self.results: list[tuple[float, int, str, str]] = []  # start, status, header, text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, http: httpx.AsyncClient, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            body = {
                "model": self.model,
                "messages": [{"role": "user", "content": f"client {i} request {n}"}],
                "max_tokens": 16,
                "stream": n % 2 == 0,  # half of them streamed
            }
            started = time.monotonic()
            try:
                resp = await http.post("/v1/chat/completions", json=body)
                text = answer_text(resp) if resp.status_code == 200 else resp.text
                self.results.append((started, resp.status_code, resp.headers.get(HEADER, ""), text))
            except httpx.HTTPError as exc:
                self.results.append((started, 0, "", repr(exc)))

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            await asyncio.gather(*(self._client(http, i) for i in range(self.clients)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_swap_and_rollback_under_load_fail_nothing(
    broker: str, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    from serving.service import ServingService

    name = f"vllm-{uuid.uuid4().hex[:8]}"
    registrar = Registrar(mlflow_server.tracking_uri)
    v1 = registrar.register(name, write_checkpoint(tmp_path / "m1"))
    v2 = registrar.register(name, write_checkpoint(tmp_path / "m2"))
    registrar.crown(name, v1)
    vllm = VllmConfig(
        command=[sys.executable, str(STANDIN), "--latency", "0.2", "--startup-delay", "1"],
        health_interval_s=0.1,
        start_timeout_s=60,
        stop_grace_s=5,
    )
    settings = serving_settings(broker, mlflow_server, tmp_path / "home", engine="vllm", vllm=vllm)
    service = ServingService(settings, models=[name]).start()
    try:
        assert service.manager.engine.name == "vllm"
        wait_for(lambda: service.manager.current(name), what="the first champion")
        with Load(service.url, name, clients=4) as load:
            time.sleep(1.5)
            forward_at = time.monotonic()
            registrar.crown(name, v2)
            service.manager.kick(name)  # what a champion.changed event does
            wait_for(
                lambda: any(r[2] == f"{name}/{v2}" for r in load.results[-4:]),
                what="answers from v2",
            )
            wait_for(lambda: not processes_named(f"{name}/{v1} "), what="v1's server to stop")
            time.sleep(1.0)
            registrar.crown(name, v1)  # the rollback: just another alias change
            service.manager.kick(name)
            wait_for(lambda: not processes_named(f"{name}/{v2} "), what="the rollback to v1")
            back_at = time.monotonic()  # v2's server is gone: every new request is v1's
            time.sleep(1.0)
        results = sorted(load.results)
        failed = [r for r in results if r[1] != 200]
        assert failed == [], failed[:3]
        assert len(results) > 40
        for _, _, header, text in results:
            assert text.startswith(f"{header} answered:")  # the header names who answered
        versions = {h.rsplit("/", 1)[1] for _, _, h, _ in results}
        assert versions == {v1, v2}
        assert all(h == f"{name}/{v1}" for t, _, h, _ in results if t < forward_at)
        assert all(t > forward_at for t, _, h, _ in results if h == f"{name}/{v2}")
        assert all(h == f"{name}/{v1}" for t, _, h, _ in results if t > back_at)
        assert sum(1 for t, *_ in results if t > back_at) >= 4
        assert len(processes_named(f"{name}/")) == 1  # only the rolled-back v1 runs now
    finally:
        service.stop()
    assert wait_gone(name, timeout_s=15) == []
