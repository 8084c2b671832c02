"""Session fixtures: a real embedded Kafka-protocol broker and real MLflow servers.

- ``broker``: bootstrap address of a Tansu broker on a free loopback port (or of an existing
  cluster given by ``UPTAKE_TEST_KAFKA_BOOTSTRAP``, e.g. Apache Kafka).
- ``mlflow_server``: a tracking server with registry webhooks enabled, parametrised over the
  backend store: SQLite always, PostgreSQL too when ``UPTAKE_TEST_POSTGRES_URL`` is set.
- ``settings``: Settings wired to both, with a private state dir and topic names unique to
  the test so tests sharing the broker never see each other's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uptake.errors import encodable
from uptake.settings import KafkaSettings, Settings, TopicNames
from uptake.stack.broker import embedded_broker, resolve_broker_bin
from uptake.stack.mlflow_server import mlflow_server as mlflow_server_process
from uptake.stack.process import free_port

POSTGRES_URL_ENV = "UPTAKE_TEST_POSTGRES_URL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.one_backend``: a whole-flow test (real trainings, kills, several workers)
    runs on one MLflow store, PostgreSQL when it is configured (what production runs), else
    SQLite. The store-specific calls it makes are covered on both stores by the lighter tests;
    running each flow twice only doubled the suite's longest tests."""
    keep = "postgres" if os.environ.get(POSTGRES_URL_ENV) else "sqlite"
    dropped = [
        item
        for item in items
        if item.get_closest_marker("one_backend") is not None
        and (callspec := getattr(item, "callspec", None)) is not None
        and callspec.params.get("mlflow_server", keep) != keep
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Captured output as UTF-8 text: the fuzz tests feed lone surrogates, and pytest-xdist
    cannot send a report whose captured log holds one back from its worker."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(encodable(k), encodable(v)) for k, v in report.sections]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("UPTAKE_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    proc = embedded_broker(resolve_broker_bin(), free_port(), log).start()
    try:
        proc.wait_healthy(30)
        yield proc.address
    finally:
        proc.stop()


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str
    backend: str
    backend_store_uri: str
    state_dir: Path


def _postgres_database(url: str) -> tuple[str, str]:
    """Create a fresh database for one MLflow server; return (its URL, its name)."""
    import sqlalchemy as sa

    name = f"uptake_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sa.engine.make_url(url).set(database=name)), name


def _drop_postgres_database(url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _backends() -> list[object]:
    postgres = pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} not set"
        ),
    )
    return ["sqlite", postgres]


@pytest.fixture(scope="session", params=_backends())
def mlflow_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    backend: str = request.param
    state = tmp_path_factory.mktemp(f"mlflow-{backend}")
    dropped: tuple[str, str] | None = None
    if backend == "postgres":
        admin_url = os.environ[POSTGRES_URL_ENV]
        store, name = _postgres_database(admin_url)
        dropped = (admin_url, name)
    else:
        store = f"sqlite:///{state / 'mlflow.db'}"
    proc = mlflow_server_process(
        state, free_port(), backend_store_uri=store, extra_env={"MLFLOW_WEBHOOK_CACHE_TTL": "1"}
    ).start()
    try:
        proc.wait_healthy(180)
        yield MlflowServer(proc.address, backend, store, state)
    finally:
        proc.stop()
        if dropped:
            _drop_postgres_database(*dropped)


def unique_topics() -> TopicNames:
    tag = uuid.uuid4().hex[:8]
    return TopicNames(
        releases=f"t{tag}.releases",
        runs=f"t{tag}.runs",
        decisions=f"t{tag}.decisions",
        dlq=f"t{tag}.dlq",
    )


def fast_kafka(*, partitions: int, max_retries: int) -> KafkaSettings:
    """Kafka settings for tests: unique topics, quick group joins, retries and polls."""
    return KafkaSettings(
        topics=unique_topics(),
        partitions=partitions,
        max_poll_interval_ms=3_000,
        session_timeout_ms=6_000,
        retry_backoff_s=0.05,
        max_retries=max_retries,
        poll_timeout_ms=200,
    )


@pytest.fixture
def settings(broker: str, tmp_path: Path) -> Settings:
    """Settings on the test broker with unique topics; no MLflow (add ``mlflow_settings``)."""
    return Settings(
        home=tmp_path / "home",
        kafka_bootstrap=broker,
        kafka=fast_kafka(partitions=2, max_retries=2),
    )


@pytest.fixture
def mlflow_settings(settings: Settings, mlflow_server: MlflowServer) -> Settings:
    return settings.model_copy(update={"mlflow_tracking_uri": mlflow_server.tracking_uri})
