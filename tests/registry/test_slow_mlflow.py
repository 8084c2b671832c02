"""A slow MLflow neither evicts the promoter from its group nor lets a second holder in.

The promoter talks to the real test MLflow server through a loopback proxy that holds each
Model Registry request for ``DELAY_S``: one decision then takes longer than both
``max_poll_interval_ms`` (10 s) and ``lease_s`` (3 s) together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa

from registry import db
from registry.db import make_engine
from registry.locks import ModelLocks
from registry.mlflow_registry import Registry
from registry.service import PromoterService
from tests.registry.conftest import configure
from tests.registry.helpers import GOOD, Worker, wait_for
from uptake.bus import EventProducer, ensure_topics
from uptake.settings import Settings

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

DELAY_S = 1.5
REGISTRY_PATHS = ("/registered-models/", "/model-versions/")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


@contextmanager
def slow_proxy(upstream: str, delay_s: float) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP proxy to ``upstream`` that delays Model Registry requests."""
    client = httpx.Client(base_url=upstream, timeout=60)
    delayed: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if any(part in self.path for part in REGISTRY_PATHS):
                delayed.append(self.path)
                time.sleep(delay_s)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers.pop("Host", None)
            answer = client.request(self.command, self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", delayed
    finally:
        server.shutdown()
        server.server_close()
        client.close()


def test_a_slow_mlflow_decision_keeps_the_group_and_the_lease(
    mlflow_settings: Settings, worker: Worker, model_name: str
) -> None:
    direct = configure(mlflow_settings, model=model_name, mode="auto", lease_s=3.0)
    ensure_topics(direct)
    event = worker.register(model_name, GOOD)
    with slow_proxy(direct.tracking_uri, DELAY_S) as (proxy_url, delayed):
        s = direct.model_copy(update={"mlflow_tracking_uri": proxy_url})
        service = PromoterService(s, alerts=False).start()
        # another promoter on the same state store watches the lease row, ready to take it
        # as soon as the promoter's lease lapses while held (expired, never released)
        rival_store = make_engine(direct)
        rival = ModelLocks(rival_store, "rival-promoter", lease_s=30, timeout_s=1)
        taken: list[int] = []
        done = threading.Event()

        def contend() -> None:
            t = db.leases
            while not done.is_set():
                with rival_store.connect() as conn:
                    row = conn.execute(
                        sa.select(t.c.holder, t.c.expires_at).where(t.c.model == model_name)
                    ).first()
                lapsed = row is not None and row.holder == service.ctx.locks.holder
                if lapsed and row.expires_at < db.now():
                    generation = rival.try_acquire(model_name)
                    if generation is not None:
                        taken.append(generation)
                        rival.release(model_name)
                done.wait(0.2)

        contender = threading.Thread(target=contend, daemon=True)
        try:
            with EventProducer(s) as producer:
                contender.start()
                started = time.monotonic()
                producer.publish(event)
                wait_for(
                    lambda: service.consumer.stats.processed >= 1,
                    180,
                    "v1 decided through the slow MLflow",
                )
                took = time.monotonic() - started
                done.set()
                time.sleep(4)  # a redelivery after an eviction would show up by now
                stats = service.consumer.stats
                processed, revocations = stats.processed, stats.revocations
        finally:
            done.set()
            service.stop()
            rival_store.dispose()
    assert took > s.kafka.max_poll_interval_ms / 1000  # slower than the poll interval...
    assert len(delayed) * DELAY_S > s.kafka.max_poll_interval_ms / 1000
    assert revocations == 0  # ...and yet never evicted from the group
    assert processed == 1  # handled once: no redelivery
    assert taken == []  # renewed throughout: the lease never lapsed, no second holder got in
    assert len(service.ctx.store.decisions_of(model_name)) == 1
    assert service.ctx.store.candidate_state(model_name, "1") == "promoted"
    assert Registry(direct.tracking_uri).champion(model_name) == "1"
