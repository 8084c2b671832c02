"""Module-scoped stacks for the serving tests: settings on the session broker and MLflow, tiny
models registered there, and a running ``ServingService`` on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.service import ServingService
from tests.conftest import MlflowServer, fast_kafka
from tests.serving.helpers import Registrar, tiny_model
from uptake.serving_config import ServingSettings
from uptake.settings import Settings


def serving_settings(broker: str, mlflow: MlflowServer, home: Path, **serving: object) -> Settings:
    return Settings(
        home=home,
        kafka_bootstrap=broker,
        mlflow_tracking_uri=mlflow.tracking_uri,
        kafka=fast_kafka(partitions=1, max_retries=1),
        serving=ServingSettings(port=0, device="cpu", **serving),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny models that answer differently (versions 1 and 2 of a track)."""
    root = tmp_path_factory.mktemp("tiny")
    return {"a": tiny_model(root / "a", seed=1), "b": tiny_model(root / "b", seed=2)}


@pytest.fixture(scope="module")
def registrar(mlflow_server: MlflowServer) -> Registrar:
    return Registrar(mlflow_server.tracking_uri)


def running(settings: Settings, models: list[str]) -> Iterator[ServingService]:
    service = ServingService(settings, models=models).start()
    try:
        yield service
    finally:
        service.stop()
