"""The MLflow calls the registry makes, in one place (MLflow 3.x client API).

Only the client wrapper: the names it reads and writes (aliases, version tags) are those of
``uptake.mlflow_contract``; what they mean to a decision lives in the step modules.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.webhook import WebhookEvent, WebhookEventStr
from mlflow.exceptions import MlflowException

from uptake.mlflow_contract import CHAMPION_ALIAS, TAG_VALUE_MAX
from uptake.registry_config import RegistrySettings

log = logging.getLogger(__name__)

WEBHOOK_EVENTS: list[WebhookEventStr | WebhookEvent] = ["model_version_tag.set"]


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def tag_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= TAG_VALUE_MAX else text[: TAG_VALUE_MAX - 1] + "…"


def bound_mlflow_requests(cfg: RegistrySettings) -> dict[str, str]:
    """Bound every MLflow HTTP request of this process: its timeout, retries and backoff.

    MLflow reads these environment variables at each request; its defaults (7 retries,
    backoff factor 2, 120 s timeout) let one call retry for minutes while a decision holds
    a model's lease. Set from ``registry.mlflow_*`` when the promoter (or a CLI command that
    decides) starts; returns what was set.
    """
    bounds = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(cfg.mlflow_timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(cfg.mlflow_max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(cfg.mlflow_backoff_factor),
    }
    os.environ.update(bounds)
    return bounds


class Registry:
    """A thin, typed view of the MLflow Model Registry for one tracking server."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # -- reads -------------------------------------------------------------------------------

    def aliases(self, model: str) -> dict[str, str]:
        """Alias -> version of a registered model ({} when the model does not exist yet)."""
        try:
            registered = self.client.get_registered_model(model)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {alias: str(version) for alias, version in (registered.aliases or {}).items()}

    def champion(self, model: str) -> str | None:
        return self.aliases(model).get(CHAMPION_ALIAS)

    def version(self, model: str, version: str) -> ModelVersion:
        return self.client.get_model_version(model, str(version))

    def find_version(self, model: str, version: str) -> ModelVersion | None:
        try:
            return self.version(model, version)
        except MlflowException as exc:
            if _missing(exc):
                return None
            raise

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model`` (a registered model has tens, not thousands)."""
        escaped = model.replace("'", "\\'")
        try:
            return list(self.client.search_model_versions(f"name='{escaped}'"))
        except MlflowException as exc:
            if _missing(exc):
                return []
            raise

    def model_tags(self, model: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(model).tags or {})
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def run_data(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
        """(latest metrics, tags) of a run."""
        run = self.client.get_run(run_id)
        return dict(run.data.metrics), dict(run.data.tags)

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """A run's text artifact, or None when the run has none at ``path``."""
        with tempfile.TemporaryDirectory(prefix="uptake-registry-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError) as exc:
                log.info("no %s for run %s: %s", path, run_id, exc)
                return None
            return Path(local).read_text(encoding="utf-8")

    # -- writes ------------------------------------------------------------------------------

    def set_version_tags(self, model: str, version: str, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(model, str(version), key, tag_value(value))

    def set_model_tag(self, model: str, key: str, value: object) -> None:
        self.client.set_registered_model_tag(model, key, tag_value(value))

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model, alias, str(version))

    def delete_alias(self, model: str, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(model, alias)
        except MlflowException as exc:
            if not _missing(exc):
                raise

    def log_json(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def set_run_tags(self, run_id: str, tags: dict[str, object]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, tag_value(value))

    # -- webhooks ----------------------------------------------------------------------------

    def ensure_webhook(self, name: str, url: str, secret: str) -> str:
        """Create the webhook ``name`` (or point the existing one at ``url``); return its id."""
        for hook in self._webhooks():
            if hook.name == name:
                updated = self.client.update_webhook(
                    hook.webhook_id, url=url, events=WEBHOOK_EVENTS, secret=secret, status="ACTIVE"
                )
                return updated.webhook_id
        created = self.client.create_webhook(name, url, events=WEBHOOK_EVENTS, secret=secret)
        return created.webhook_id

    def delete_webhook(self, webhook_id: str, *, only_if_url: str | None = None) -> bool:
        """Delete the webhook; with ``only_if_url``, only while it still posts there (another
        promoter may have pointed the shared webhook at itself since). True if deleted."""
        try:
            if only_if_url is not None and self.client.get_webhook(webhook_id).url != only_if_url:
                return False
            self.client.delete_webhook(webhook_id)
        except MlflowException as exc:
            if not _missing(exc):
                raise
            return False
        return True

    def _webhooks(self) -> list[Any]:
        out: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.list_webhooks(max_results=100, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out
