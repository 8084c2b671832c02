"""The MLflow calls the registry makes, in one place (MLflow 3.x client API).

Conventions (DESIGN.md "MLflow conventions"): aliases ``champion`` / ``challenger``; version
tags ``approval`` (pending / approved / rejected), ``uptake.previous_champion``,
``uptake.decision``; stages are never used.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from registry.evidence import (
    BASE_RESULTS_ARTIFACT,
    RESULTS_ARTIFACT,
    Evidence,
    TaskOutcome,
    evidence_from_run,
    parse_results_jsonl,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
APPROVAL_TAG = "approval"
APPROVAL_VERDICTS = ("approved", "rejected")  # what a person sets; "pending" is ours
APPROVAL_BY_TAG = "approval.by"
DECISION_TAG = "uptake.decision"
DECISION_REASON_TAG = "uptake.decision_reason"
PREVIOUS_CHAMPION_TAG = "uptake.previous_champion"
HISTORY_TAG_PREFIX = "uptake.history."
WEBHOOK_EVENTS = ["model_version_tag.set"]
_TAG_MAX = 5000  # MLflow's limit on a model version / registered model tag value


def _missing(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def tag_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _TAG_MAX else text[: _TAG_MAX - 1] + "…"


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
        return self.aliases(model).get(CHAMPION)

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

    def evidence(self, model: str, version: str) -> Evidence:
        """Scores of ``model``/``version`` from its run (metrics and tags of the eval engine)."""
        mv = self.version(model, version)
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        if mv.run_id:
            run = self.client.get_run(mv.run_id)
            metrics, tags = dict(run.data.metrics), dict(run.data.tags)
        tags = {**tags, **{k: v for k, v in (mv.tags or {}).items() if k.startswith("uptake.")}}
        return evidence_from_run(
            model, str(mv.version), f"models:/{model}/{mv.version}", mv.run_id, metrics, tags
        )

    def task_outcomes(self, run_id: str, base: bool = False) -> list[TaskOutcome] | None:
        """Per-task results logged by the eval engine, or None when the run has none."""
        path = BASE_RESULTS_ARTIFACT if base else RESULTS_ARTIFACT
        with tempfile.TemporaryDirectory(prefix="uptake-registry-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError) as exc:
                log.info("no %s for run %s: %s", path, run_id, exc)
                return None
            return parse_results_jsonl(Path(local).read_text(encoding="utf-8"))

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
