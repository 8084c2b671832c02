"""The demo's numbers, read from MLflow: the truth the registry decided from.

Each adopted release is one model version of the track's registered model; its run holds the
metrics (post-trained and, under ``baseline.``, the base model's), the per-area rates and the
timeline tags the worker, registry and serving wrote.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    CHAMPION_ALIAS,
    CI_SUFFIXES,
    CRITERION_PASS_RATE,
    DECISION_REASON_TAG,
    DECISION_TAG,
    DETECTED_AT_TAG,
    PROMOTED_AT_TAG,
    RELEASE_CREATED_AT_TAG,
    RELEASE_ID_TAG,
    SERVED_AT_TAG,
    UPTAKE_TAG_PREFIX,
    WORKER_STAGES,
    area_from_metric_key,
    stage_time_tag,
)


class AreaRates(BaseModel):
    base_all_pass: float | None = None
    post_all_pass: float | None = None


class Adoption(BaseModel):
    """One release as MLflow records it."""

    release_id: str
    version: str
    run_id: str | None
    base_all_pass: float | None = None
    base_criterion: float | None = None
    post_all_pass: float | None = None
    post_criterion: float | None = None
    decision: str | None = None
    reason: str | None = None
    areas: dict[str, AreaRates] = {}
    timeline: dict[str, datetime] = {}  # "release created", "detected", "<stage> ended", ...

    @property
    def repo_id(self) -> str:
        """``demo:demo-org/tiny-llama@abc…`` -> ``demo-org/tiny-llama``."""
        return self.release_id.split(":", 1)[-1].rsplit("@", 1)[0]

    @property
    def created_at(self) -> datetime | None:
        return self.timeline.get("release created") or self.timeline.get("detected")

    @property
    def served_at(self) -> datetime | None:
        return self.timeline.get("serving swapped")

    def seconds(self, start: str, end: str) -> float | None:
        a, b = self.timeline.get(start), self.timeline.get(end)
        return (b - a).total_seconds() if a and b else None

    @property
    def release_to_serving_s(self) -> float | None:
        created, served = self.created_at, self.served_at
        return (served - created).total_seconds() if created and served else None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _timeline(tags: dict[str, str]) -> dict[str, datetime]:
    wanted = {
        "release created": RELEASE_CREATED_AT_TAG,
        "detected": DETECTED_AT_TAG,
        **{f"{s} started": stage_time_tag(s, "started") for s in WORKER_STAGES},
        **{f"{s} ended": stage_time_tag(s, "ended") for s in WORKER_STAGES},
        "decided": PROMOTED_AT_TAG,
        "serving swapped": SERVED_AT_TAG,
    }
    out = {}
    for label, tag in wanted.items():
        at = parse_time(tags.get(tag))
        if at is not None:
            out[label] = at
    return out


def _areas(metrics: dict[str, float]) -> dict[str, AreaRates]:
    areas: dict[str, AreaRates] = {}
    for key, value in metrics.items():
        for prefix, field in ((BASELINE_PREFIX, "base_all_pass"), ("", "post_all_pass")):
            head = f"{prefix}{ALL_PASS_RATE}."
            if not key.startswith(head) or any(key.endswith(s) for s in CI_SUFFIXES):
                continue
            area = area_from_metric_key(key[len(head) :])
            setattr(areas.setdefault(area, AreaRates()), field, value)
    return dict(sorted(areas.items()))


class DemoMlflow:
    """Read-only views of the registered model the demo adopts into."""

    def __init__(self, tracking_uri: str, registered_model: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.name = registered_model

    def adoptions(self) -> list[Adoption]:
        """Every version of the registered model, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        out = []
        for mv in sorted(versions, key=lambda v: int(v.version)):
            run_tags: dict[str, str] = {}
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    run = self.client.get_run(mv.run_id)
                    run_tags, metrics = dict(run.data.tags), dict(run.data.metrics)
                except MlflowException:
                    pass
            vtags = dict(mv.tags or {})
            own = {k: v for k, v in vtags.items() if k.startswith(UPTAKE_TAG_PREFIX)}
            tags = {**run_tags, **own}
            out.append(
                Adoption(
                    release_id=tags.get(RELEASE_ID_TAG, f"{self.name} v{mv.version}"),
                    version=str(mv.version),
                    run_id=mv.run_id,
                    base_all_pass=metrics.get(BASELINE_PREFIX + ALL_PASS_RATE),
                    base_criterion=metrics.get(BASELINE_PREFIX + CRITERION_PASS_RATE),
                    post_all_pass=metrics.get(ALL_PASS_RATE),
                    post_criterion=metrics.get(CRITERION_PASS_RATE),
                    decision=vtags.get(DECISION_TAG) or run_tags.get(DECISION_TAG),
                    reason=vtags.get(DECISION_REASON_TAG) or run_tags.get(DECISION_REASON_TAG),
                    areas=_areas(metrics),
                    timeline=_timeline(tags),
                )
            )
        return out

    def champion(self) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, CHAMPION_ALIAS).version)
        except MlflowException:
            return None
