"""The shared service plumbing: thread supervision, stop signals, the threaded HTTP server,
and state stores (one timestamp convention, schema versions, an older file migrated)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from registry import db as registry_db
from tests.conftest import POSTGRES_URL_ENV, _drop_postgres_database, _postgres_database
from uptake import db
from uptake.errors import DependencyError
from uptake.http_server import HttpServer
from uptake.service_runtime import ServiceFailed, Supervisor, stop_event
from uptake.settings import Settings
from watcher.store import Store

# -- supervision ----------------------------------------------------------------------------


class Fatal(BaseException):
    pass


def test_a_thread_that_dies_fails_the_service_with_one_line() -> None:
    supervisor = Supervisor("svc")

    def dies() -> None:
        time.sleep(0.1)
        raise Fatal("boom\non two lines")

    supervisor.start("consumer", dies)
    started = time.monotonic()
    with pytest.raises(ServiceFailed) as info:
        supervisor.wait(threading.Event())
    assert time.monotonic() - started < 5
    assert str(info.value) == "svc: consumer died: Fatal: boom on two lines"
    assert info.value.exit_code == 1


def test_a_thread_that_returns_unasked_fails_but_not_once_stopping() -> None:
    supervisor = Supervisor("svc")
    supervisor.start("loop", lambda: None)
    with pytest.raises(ServiceFailed, match="svc: loop stopped unexpectedly"):
        supervisor.wait(threading.Event())

    calm = Supervisor("svc")
    release = threading.Event()
    calm.start("loop", release.wait)
    calm.stop()  # shutting down: the loop ending now is expected
    release.set()
    stop = threading.Event()
    stop.set()
    calm.wait(stop)
    assert calm.failure is None


def test_a_watched_part_that_stops_fails_the_service() -> None:
    supervisor = Supervisor("svc")
    alive = threading.Event()
    alive.set()
    supervisor.watch("HTTP server", alive.is_set)
    stop = threading.Event()
    threading.Timer(0.2, alive.clear).start()
    with pytest.raises(ServiceFailed, match="svc: HTTP server stopped unexpectedly"):
        supervisor.wait(stop, poll_s=0.05)


def test_sigterm_sets_the_stop_event() -> None:
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = stop_event()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


# -- HTTP server ----------------------------------------------------------------------------


def test_http_server_serves_reports_liveness_and_refuses_a_busy_port() -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    server = HttpServer(app, "127.0.0.1", 0, name="test service").start()
    try:
        assert server.alive
        assert httpx.get(f"{server.url}/ping", timeout=5).json() == {"ok": "yes"}
        with pytest.raises(DependencyError, match=f"test service cannot listen on .*{server.port}"):
            HttpServer(app, "127.0.0.1", server.port, name="test service")
        # an unset port falls back from a busy default port to a free one
        other = HttpServer(app, "127.0.0.1", None, name="test", default_port=server.port)
        assert other.port != server.port
        other.stop()
    finally:
        server.stop()
    assert not server.alive
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


# -- state stores ---------------------------------------------------------------------------


def test_timestamps_are_epoch_seconds_in_both_stores(tmp_path: Path) -> None:
    """One convention: REAL epoch seconds on disk; the watcher reads aware UTC datetimes."""
    settings = Settings(home=tmp_path)
    engine = registry_db.make_engine(settings)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(registry_db.webhook_deliveries).values(delivery_id="d", received_at=db.now())
        )
    engine.dispose()
    store = Store(f"sqlite:///{tmp_path / 'watcher.db'}")
    store.record_success("hub")
    state = store.source_state("hub")
    store.close()
    assert state is not None and state.last_success_at is not None
    assert state.last_success_at.tzinfo is not None
    assert abs((datetime.now(UTC) - state.last_success_at).total_seconds()) < 60
    for path, sql in (
        (
            tmp_path / "registry" / "registry.db",
            "SELECT typeof(received_at) FROM webhook_deliveries",
        ),
        (tmp_path / "watcher.db", "SELECT typeof(last_success_at) FROM watcher_sources"),
    ):
        with sqlite3.connect(path) as conn:
            assert conn.execute(sql).fetchone() == ("real",)


# The watcher's tables as an uptake before ``uptake.db`` created them (DATETIME columns).
LEGACY_WATCHER = [
    """CREATE TABLE watcher_sources (name VARCHAR(64) NOT NULL, initialized_at DATETIME,
    scope TEXT, consecutive_failures INTEGER NOT NULL, last_success_at DATETIME,
    last_failure_at DATETIME, last_error TEXT, alert_firing BOOLEAN NOT NULL,
    PRIMARY KEY (name))""",
    """CREATE TABLE watcher_repos (source VARCHAR(64) NOT NULL, repo_id VARCHAR(300) NOT NULL,
    revision VARCHAR(128) NOT NULL, outcome VARCHAR(16) NOT NULL, reason VARCHAR(32),
    detail TEXT, fingerprint VARCHAR(128), deferred_since DATETIME,
    first_seen_at DATETIME NOT NULL, updated_at DATETIME NOT NULL,
    PRIMARY KEY (source, repo_id))""",
    """CREATE TABLE watcher_releases (release_id VARCHAR(512) NOT NULL, source VARCHAR(64) NOT NULL,
    repo_id VARCHAR(300) NOT NULL, revision VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL,
    payload TEXT NOT NULL, repo_time DATETIME, detected_at DATETIME NOT NULL,
    published_at DATETIME, attempts INTEGER NOT NULL, last_error TEXT,
    PRIMARY KEY (release_id), CONSTRAINT uq_watcher_release UNIQUE (source, repo_id, revision))""",
    "INSERT INTO watcher_sources VALUES ('hub', '2026-11-30 08:00:00.000000', '[\"acme\"]', 0,"
    " '2026-12-01 09:30:15.250000', NULL, NULL, 0)",
    "INSERT INTO watcher_releases VALUES ('hub:acme/a@1', 'hub', 'acme/a', '1', 'pending', '{}',"
    " '2026-12-01 09:00:00.000000', '2026-12-01 09:30:15.000000', NULL, 0, NULL)",
]


def test_an_older_watcher_store_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "watcher.db"
    with sqlite3.connect(path) as conn:
        for statement in LEGACY_WATCHER:
            conn.execute(statement)
    store = Store(f"sqlite:///{path}")
    try:
        state = store.source_state("hub")
        assert state is not None
        assert state.initialized_at == datetime(2026, 11, 30, 8, tzinfo=UTC)
        assert state.last_success_at == datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)
        assert state.scope == ("acme",)
        (pending,) = store.pending()  # what was waiting to be published still is
        assert pending.release_id == "hub:acme/a@1"
        assert pending.repo_time == datetime(2026, 12, 1, 9, tzinfo=UTC)
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT version FROM uptake_schema WHERE store='watcher'"
        ).fetchone() == (1,)
    Store(f"sqlite:///{path}", create=False).close()  # a reader now accepts it


def test_a_store_from_a_newer_uptake_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "watcher.db"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE uptake_schema SET version = 7 WHERE store = 'watcher'")
    for create in (True, False):
        with pytest.raises(db.StateStoreError) as info:
            Store(f"sqlite:///{path}", create=create)
        assert "schema version 7, written by a newer uptake" in str(info.value)
        assert "\n" not in str(info.value)


def test_an_older_registry_outbox_is_migrated(tmp_path: Path) -> None:
    """Before the shared outbox, the registry's outbox had no status, attempts or reason."""
    path = tmp_path / "registry" / "registry.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE outbox (id INTEGER NOT NULL, event TEXT NOT NULL,"
            " created_at FLOAT NOT NULL, published_at FLOAT, PRIMARY KEY (id))"
        )
        conn.execute("INSERT INTO outbox VALUES (1, '{}', 1.0, 2.0), (2, '{}', 3.0, NULL)")
    engine = registry_db.make_engine(Settings(home=tmp_path))
    try:
        t = registry_db.outbox
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.status, t.c.attempts).order_by(t.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, "published", 0), (2, "pending", 0)]
    finally:
        engine.dispose()


def test_an_older_watcher_store_on_postgresql_is_migrated(tmp_path: Path) -> None:
    admin = os.environ.get(POSTGRES_URL_ENV)
    if not admin:
        pytest.skip(f"{POSTGRES_URL_ENV} not set")
    url, name = _postgres_database(admin)
    legacy = sa.create_engine(url)
    with legacy.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE watcher_sources (name VARCHAR(64) PRIMARY KEY,"
                " initialized_at TIMESTAMP WITH TIME ZONE, scope TEXT,"
                " consecutive_failures INTEGER NOT NULL, last_success_at TIMESTAMP WITH TIME ZONE,"
                " last_failure_at TIMESTAMP WITH TIME ZONE, last_error TEXT,"
                " alert_firing BOOLEAN NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO watcher_sources VALUES ('hub', '2026-11-30 08:00:00+00', NULL, 0,"
                " '2026-12-01 09:30:15.25+00', NULL, NULL, false)"
            )
        )
    legacy.dispose()
    try:
        store = Store(url)
        try:
            state = store.source_state("hub")
            assert state is not None
            assert state.initialized_at == datetime(2026, 11, 30, 8, tzinfo=UTC)
            assert state.last_success_at == datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)
            store.record_success("hub")
        finally:
            store.close()
    finally:
        _drop_postgres_database(admin, name)


def test_freeze_after_imports_leaves_later_cycles_collectable() -> None:
    """In a fresh interpreter (freezing is process-wide): the named module is imported, what
    was alive is frozen, and a cycle made afterwards is still collected."""
    script = """
import gc, sys
from uptake.service_runtime import freeze_after_imports
freeze_after_imports(("json",))
assert "json" in sys.modules and gc.get_freeze_count() > 1000, gc.get_freeze_count()
class Node: pass
a, b = Node(), Node(); a.other, b.other = b, a
del a, b
assert gc.collect() >= 2
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
