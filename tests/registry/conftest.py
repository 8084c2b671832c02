"""Registry fixtures: settings for a promoter under test, a fake worker, unique model names."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import MlflowServer
from tests.registry.helpers import Worker
from uptake.registry_config import GateConfig, RegistrySettings, WebhookReceiverConfig
from uptake.settings import Settings


def configure(
    settings: Settings,
    *,
    model: str | None = None,
    mode: str = "auto",
    gate: dict[str, Any] | None = None,
    webhook: dict[str, Any] | None = None,
    **registry: Any,
) -> Settings:
    """``settings`` with a registry section for this test (webhook receiver off by default);
    ``model``: the registered model it manages (uptake decides on managed models only)."""
    hook = WebhookReceiverConfig(
        **{"enabled": False, "name": f"uptake-test-{uuid.uuid4().hex[:8]}", **(webhook or {})}
    )
    section = RegistrySettings(
        gate=GateConfig(mode=mode, **(gate or {})),
        webhook=hook,
        consumer_group=f"promoter-{uuid.uuid4().hex[:8]}",
        **{"reconcile_interval_s": 3600.0, **registry},
    )
    # production's poll interval: a decision is a few MLflow calls, slow on a busy machine
    kafka = settings.kafka.model_copy(
        update={"max_poll_interval_ms": 10_000, "session_timeout_ms": 10_000}
    )
    update: dict[str, Any] = {"registry": section, "kafka": kafka}
    if model is not None:
        update["mlflow"] = settings.mlflow.model_copy(update={"registered_model": model})
    return settings.model_copy(update=update)


@pytest.fixture
def model_name() -> str:
    return f"uptake-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(mlflow_server: MlflowServer) -> Worker:
    return Worker(mlflow_server.tracking_uri)
