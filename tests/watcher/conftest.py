"""Watcher fixtures: a fake Hub on loopback, settings with short intervals, services, reads."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.core.kafka_helpers import read_topic
from tests.watcher.fake_hub import FakeHub
from uptake.events import Event, decode_event
from uptake.settings import Settings
from uptake.watcher_config import Filters, HfSourceConfig, WatcherSettings
from watcher.service import WatcherService

FAST_WATCHER = {
    "backoff_initial_s": 0.2,
    "backoff_max_s": 2.0,
    "alert_after": 3,
    "outbox_retry_s": 1.0,
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


def hf_source(hub: FakeHub, **overrides: Any) -> HfSourceConfig:
    """An hf source on the fake hub: text-generation only, short timeouts."""
    data: dict[str, Any] = {
        "name": "hub",
        "kind": "hf",
        "endpoint": hub.url,
        "authors": ["acme"],
        "interval_s": 0.5,
        "timeout_s": 2.0,
        "filters": Filters(pipeline_tags=["text-generation"]),
    }
    data.update(overrides)
    return HfSourceConfig.model_validate(data)


@pytest.fixture
def store_url() -> Iterator[str | None]:
    """None (SQLite under the test's state dir), or a fresh PostgreSQL database per test when
    ``UPTAKE_TEST_WATCHER_STORE=postgres`` and ``UPTAKE_TEST_POSTGRES_URL`` are set."""
    admin_url = os.environ.get("UPTAKE_TEST_POSTGRES_URL")
    if os.environ.get("UPTAKE_TEST_WATCHER_STORE") != "postgres" or not admin_url:
        yield None
        return
    import sqlalchemy as sa

    name = f"uptake_watcher_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_settings(settings: Settings, store_url: str | None) -> Callable[..., Settings]:
    def make(*sources: Any, **watcher: Any) -> Settings:
        return settings.model_copy(
            update={
                "sources": list(sources),
                "watcher": WatcherSettings.model_validate(
                    {**FAST_WATCHER, "store_url": store_url, **watcher}
                ),
            }
        )

    return make


@pytest.fixture
def make_service() -> Iterator[Callable[..., WatcherService]]:
    made: list[WatcherService] = []

    def make(settings: Settings, **kw: Any) -> WatcherService:
        service = WatcherService(settings, **kw)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


def events(settings: Settings, expected: int, timeout_s: float = 15.0) -> list[tuple[str, Event]]:
    """(key, event) of every record on the releases topic, waiting for ``expected`` of them."""
    records = read_topic(
        settings.kafka_bootstrap, settings.kafka.topics.releases, expected, timeout_s
    )
    return [(r.key.decode(), decode_event(r.value)) for r in records]


def releases(settings: Settings, expected: int, timeout_s: float = 15.0) -> list[Any]:
    return [e for _, e in events(settings, expected, timeout_s) if e.type == "release.detected"]


def metric(service: WatcherService, name: str, **labels: str) -> float:
    return service.metrics.value(name, **labels)


def dumps(data: Any) -> bytes:
    return json.dumps(data).encode()
