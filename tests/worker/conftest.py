"""Module-scoped stack for the worker tests: the session broker and MLflow, unique topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import fast_kafka
from uptake.bus import ensure_topics
from uptake.settings import Settings


@pytest.fixture(scope="module")
def stack(broker: str, mlflow_server, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings on the real broker and MLflow, topics created, a private state dir."""
    settings = Settings(
        home=tmp_path_factory.mktemp("worker-home"),
        kafka_bootstrap=broker,
        mlflow_tracking_uri=mlflow_server.tracking_uri,
        kafka=fast_kafka(partitions=2, max_retries=1),
    )
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def unique() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drops")


@pytest.fixture(autouse=True, scope="module")
def _patient_template_render() -> Iterator[None]:
    """The bounded chat-template render spawns a child with a 10 s budget (start included);
    on a CI box shared by many jobs the start alone can take longer. The limit is not what
    these tests are about (tests/train covers it), so give it room."""
    import uptake.models.chat_templates as templates

    old = templates.RENDER_TIMEOUT_S
    templates.RENDER_TIMEOUT_S = 120.0
    yield
    templates.RENDER_TIMEOUT_S = old
