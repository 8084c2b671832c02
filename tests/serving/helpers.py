"""Register tiny models in the test MLflow the way the worker does, and follow the alias."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests import waiting
from uptake.mlflow_contract import CHAMPION_ALIAS, RELEASE_ID_TAG
from uptake.testing.tiny_models import TinyModelSpec, build_tiny_model


def tiny_model(path: Path, seed: int) -> Path:
    """A small random Llama whose greedy answers depend on ``seed`` and the prompt."""
    return build_tiny_model(path, TinyModelSpec(seed=seed, weight_scale=5.0, hidden_size=64))


class Registrar:
    """Logs a model directory as a run's ``model`` artifact and registers a version from it."""

    def __init__(self, tracking_uri: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self.client.create_experiment(f"serving-{uuid.uuid4().hex[:8]}")

    def register(self, name: str, model_dir: Path, tags: dict[str, str] | None = None) -> str:
        run = self.client.create_run(self.experiment_id)
        self.client.log_artifacts(run.info.run_id, str(model_dir), "model")
        self.client.set_terminated(run.info.run_id)
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = self.client.create_model_version(
            name,
            f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={RELEASE_ID_TAG: f"test:{name}@{run.info.run_id[:8]}", **(tags or {})},
        )
        return str(mv.version)

    def crown(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    """``tests.waiting.wait_for`` with serving's longer default (a model loads meanwhile)."""
    return waiting.wait_for(predicate, timeout_s, what, poll_s=0.1)
