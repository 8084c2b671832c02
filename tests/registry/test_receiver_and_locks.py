"""The approval webhook receiver (signature, freshness, replays) and the promotion lease."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from registry import db
from registry.db import make_engine
from registry.locks import LockTimeout, ModelLeaseLost, ModelLocks
from registry.webhook_receiver import MAX_BODY_BYTES, DeliveryLog, ReceiverServer, make_app
from tests.conftest import POSTGRES_URL_ENV, _drop_postgres_database, _postgres_database
from uptake import db as state_db
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_PENDING,
    APPROVAL_REJECTED,
    APPROVAL_TAG,
)
from uptake.registry_config import RegistrySettings
from uptake.settings import Settings
from uptake.webhooks import sign_mlflow

SECRET = "whsec-receiver"


def delivery(
    key: str = APPROVAL_TAG,
    value: str = APPROVAL_APPROVED,
    *,
    secret: str = SECRET,
    age_s: int = 0,
    delivery_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "entity": "model_version_tag",
            "action": "set",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "data": {"name": "m", "version": "3", "key": key, "value": value},
        }
    )
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time()) - age_s)
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign_mlflow(secret, delivery_id, ts, body),
        "Content-Type": "application/json",
    }
    return headers, body.encode()


def _store_backends() -> list[object]:
    postgres = pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} not set"
        ),
    )
    return ["sqlite", postgres]


@pytest.fixture(params=_store_backends())
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The state store on SQLite (default) and on PostgreSQL (``registry.state_url``)."""
    if request.param == "sqlite":
        engine = make_engine(Settings(home=tmp_path))
        yield engine
        engine.dispose()
        return
    admin = os.environ[POSTGRES_URL_ENV]
    url, name = _postgres_database(admin)
    settings = Settings(home=tmp_path, registry=RegistrySettings(state_url=url))
    engine = make_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()
        _drop_postgres_database(admin, name)


def test_receiver_verifies_signature_freshness_and_replays(engine) -> None:
    verdicts: list[tuple[str, str]] = []
    app = make_app(SECRET, DeliveryLog(engine, max_age_s=60), lambda m, v: verdicts.append((m, v)))
    server = ReceiverServer(app, "127.0.0.1", 0).start()
    try:

        def post(headers: dict[str, str], body: bytes) -> int:
            return httpx.post(server.url, headers=headers, content=body, timeout=5).status_code

        forged_headers, forged_body = delivery(secret="not-the-secret")
        assert post(forged_headers, forged_body) == 401
        assert post(*delivery(age_s=3600)) == 401  # stale
        headers, body = delivery()
        assert post(headers, body[:-1] + b" }") == 401  # body tampered with
        assert verdicts == []

        assert post(headers, body) == 202
        assert verdicts == [("m", "3")]
        assert post(headers, body) == 409  # the same delivery again: a replay
        assert post(*delivery(value=APPROVAL_PENDING)) == 200  # our own tag: nothing to do
        assert post(*delivery(key="note", value=APPROVAL_APPROVED)) == 200
        assert post(*delivery(value=APPROVAL_REJECTED)) == 202
        assert verdicts == [("m", "3"), ("m", "3")]
        stats = app.state.stats
        assert (stats.rejected, stats.replayed, stats.ignored, stats.accepted) == (3, 1, 2, 2)
    finally:
        server.stop()


def test_receiver_caps_bodies_before_reading_and_refuses_odd_timestamps(tmp_path: Path) -> None:
    engine = make_engine(Settings(home=tmp_path))
    verdicts: list[tuple[str, str]] = []
    app = make_app(SECRET, DeliveryLog(engine, max_age_s=60), lambda m, v: verdicts.append((m, v)))
    server = ReceiverServer(app, "127.0.0.1", 0).start()
    try:
        headers, body = delivery()
        big = body + b" " * MAX_BODY_BYTES  # still a valid JSON body, just too large
        r = httpx.post(server.url, headers=headers, content=big, timeout=5)
        assert r.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds while reading
            yield body
            for _ in range(64):
                yield b" " * 4096

        assert (
            httpx.post(server.url, headers=headers, content=chunks(), timeout=5).status_code == 413
        )

        # a declared 1 GB body is refused from the headers alone: nothing needs to be sent
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(
                b"POST /hooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n"
            )
            assert sock.recv(200).startswith(b"HTTP/1.1 413")

        # "²".isdigit() is True, int("²") raises: this was a 500
        odd = {**headers, "X-MLflow-Timestamp": "²".encode("latin-1")}
        assert httpx.post(server.url, headers=odd, content=body, timeout=5).status_code == 401
        assert httpx.post(server.url, headers=headers, content=body, timeout=5).status_code == 202
        assert verdicts == [("m", "3")]
        assert (app.state.stats.too_large, app.state.stats.rejected) == (3, 1)
    finally:
        server.stop()
        engine.dispose()


def test_lease_admits_one_promoter_at_a_time(engine) -> None:
    a = ModelLocks(engine, "promoter-a", lease_s=30, timeout_s=0.5)
    b = ModelLocks(engine, "promoter-b", lease_s=30, timeout_s=0.5)
    assert a.try_acquire("m")
    assert not b.try_acquire("m")
    assert b.holder_of("m") == "promoter-a"
    with pytest.raises(LockTimeout, match="promoter-a"), b.hold("m"):
        pass
    a.release("m")
    with b.hold("m"):
        assert not a.try_acquire("m")
    assert a.try_acquire("m")


def test_expired_lease_is_taken_over(engine) -> None:
    crashed = ModelLocks(engine, "crashed", lease_s=0.2, timeout_s=1)
    assert crashed.try_acquire("m")  # and never released
    other = ModelLocks(engine, "other", lease_s=30, timeout_s=5)
    started = time.monotonic()
    with other.hold("m"):
        assert other.holder_of("m") == "other"
    assert time.monotonic() - started < 3


def test_threads_of_one_promoter_are_serialised(engine) -> None:
    locks = ModelLocks(engine, "p", lease_s=30, timeout_s=10)
    inside = 0
    peak = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        with locks.hold("m"):
            with guard:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.05)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1


def test_a_held_lease_is_renewed_until_released(engine) -> None:
    """A decision slowed by MLflow outlasts ``lease_s``: the heartbeat keeps the lease."""
    a = ModelLocks(engine, "promoter-a", lease_s=0.6, timeout_s=1)
    b = ModelLocks(engine, "promoter-b", lease_s=30, timeout_s=0.2)
    with a.hold("m") as lease:
        for _ in range(8):  # 2 s: more than three lease lengths
            time.sleep(0.25)
            assert b.try_acquire("m") is None
        assert a.fence("m") == lease.generation
    assert b.try_acquire("m") == lease.generation + 1


def test_a_lapsed_holder_is_fenced_off_and_cannot_release_the_new_lease(engine) -> None:
    stalled = ModelLocks(engine, "stalled", lease_s=0.4, timeout_s=1, heartbeat_s=3600)
    other = ModelLocks(engine, "other", lease_s=30, timeout_s=5)
    with stalled.hold("m") as old:
        assert stalled.fence("m") == old.generation
        with other.hold("m") as new:  # waits until the stalled holder's lease lapses
            assert new.generation == old.generation + 1
            with pytest.raises(ModelLeaseLost, match=f"generation {old.generation} lost"):
                stalled.fence("m")
            assert other.fence("m") == new.generation
        with pytest.raises(ModelLeaseLost):
            stalled.fence("m")  # released by its new holder: still not ours
    with pytest.raises(ModelLeaseLost, match="not held"):
        stalled.fence("m")
    assert other.try_acquire("m") == old.generation + 2


def test_a_version_1_state_store_gets_lease_generations(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    old = state_db.make_engine(db.default_state_url(settings))
    with old.begin() as conn:
        for statement in (
            "CREATE TABLE model_leases (model VARCHAR(256) PRIMARY KEY, holder VARCHAR(256), "
            "expires_at FLOAT NOT NULL)",
            "INSERT INTO model_leases VALUES ('m', NULL, 0)",
            "CREATE TABLE uptake_schema (store VARCHAR(64) PRIMARY KEY, version INTEGER NOT NULL)",
            "INSERT INTO uptake_schema VALUES ('registry', 1)",
        ):
            conn.execute(sa.text(statement))
    old.dispose()
    migrated = make_engine(settings)
    try:
        with migrated.connect() as conn:
            assert conn.execute(sa.select(db.leases.c.generation)).scalar_one() == 0
        assert ModelLocks(migrated, "p", lease_s=30, timeout_s=1).try_acquire("m") == 1
    finally:
        migrated.dispose()
