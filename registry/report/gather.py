"""Read one registered model version's adoption from MLflow into a ``VersionReport``.

Everything comes from what the services logged under ``uptake.mlflow_contract`` names: the
run's metrics and tags (the version's own ``uptake.*`` tags win, as for the gate), the per-task
results artifacts, the promoter's decision artifact and the serving tag. A missing piece is a
note and a dash (``MISSING``), never a crash; only a version without a run or without its
headline metrics is an error (there is nothing to report).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from registry.decision import Decision
from registry.evidence import parse_results_jsonl
from registry.mlflow_registry import Registry
from registry.report.cost import cost_points
from registry.report.model import (
    AgentTask,
    AreaBar,
    Paired,
    ReportError,
    Row,
    TimelinePoint,
    VersionReport,
)
from uptake.cost import Price
from uptake.formatting import MISSING
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASE_MODEL_TAG,
    BASELINE_PREFIX,
    BASELINE_RESULTS_ARTIFACT,
    CI_HIGH_SUFFIX,
    CI_LOW_SUFFIX,
    CI_SUFFIXES,
    CRITERION_PASS_RATE,
    DECISION_REASON_TAG,
    DECISION_TAG,
    DELTA_PREFIX,
    DETECTED_AT_TAG,
    EVAL_ARTIFACT_DIR,
    MCNEMAR_P,
    PROMOTED_AT_TAG,
    RELEASE_CREATED_AT_TAG,
    RELEASE_ID_TAG,
    RESULTS_ARTIFACT,
    SERVED_AT_TAG,
    SUITE_SHA_TAG,
    UPTAKE_TAG_PREFIX,
    WORKER_STAGES,
    area_from_metric_key,
    stage_time_tag,
)

log = logging.getLogger(__name__)
DECISION_ARTIFACTS = ("uptake/decision-approval.json", "uptake/decision-gate.json")  # last first


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 tag value as an aware UTC datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def resolve_version(reg: Registry, model: str, version: str | None) -> ModelVersion:
    """The version asked for, or the model's latest; ReportError when there is none."""
    try:
        if version is not None:
            mv = reg.find_version(model, version)
            if mv is None:
                raise ReportError(f"{model} has no version {version}")
            return mv
        versions = reg.versions(model)
    except MlflowException as exc:
        raise ReportError(f"cannot read {model} from MLflow: {exc.message}") from None
    if not versions:
        raise ReportError(f"registered model {model} has no versions")
    return max(versions, key=lambda v: int(v.version))


def _run_data(
    reg: Registry, model: str, mv: ModelVersion
) -> tuple[dict[str, float], dict[str, str]]:
    if not mv.run_id:
        raise ReportError(f"{model} v{mv.version} has no run: nothing to report")
    try:
        metrics, tags = reg.run_data(mv.run_id)
    except MlflowException as exc:
        raise ReportError(
            f"{model} v{mv.version}: run {mv.run_id} unreadable: {exc.message}"
        ) from None
    missing = [m for m in (ALL_PASS_RATE, CRITERION_PASS_RATE) if m not in metrics]
    if missing:
        raise ReportError(
            f"{model} v{mv.version}: run {mv.run_id} has no {' / '.join(missing)} metrics"
        )
    own = {k: v for k, v in (mv.tags or {}).items() if k.startswith(UPTAKE_TAG_PREFIX)}
    return metrics, {**tags, **own}


def _row(mv: ModelVersion, metrics: Mapping[str, float], tags: Mapping[str, str]) -> Row:
    created = parse_time(tags.get(RELEASE_CREATED_AT_TAG)) or parse_time(tags.get(DETECTED_AT_TAG))
    served = parse_time((mv.tags or {}).get(SERVED_AT_TAG))
    return Row(
        version=str(mv.version),
        release=tags.get(RELEASE_ID_TAG) or MISSING,
        base_all_pass=metrics.get(BASELINE_PREFIX + ALL_PASS_RATE),
        base_criterion=metrics.get(BASELINE_PREFIX + CRITERION_PASS_RATE),
        post_all_pass=metrics.get(ALL_PASS_RATE),
        post_criterion=metrics.get(CRITERION_PASS_RATE),
        decision=(mv.tags or {}).get(DECISION_TAG) or tags.get(DECISION_TAG),
        release_to_serving_s=(served - created).total_seconds() if served and created else None,
    )


def version_row(reg: Registry, model: str, mv: ModelVersion) -> Row:
    """The table row of one version (ReportError when it has no run or metrics)."""
    metrics, tags = _run_data(reg, model, mv)
    return _row(mv, metrics, tags)


def summary_rows(reg: Registry, model: str) -> tuple[list[Row], list[str]]:
    """The table rows of every version of ``model``, oldest first, and why any were left out."""
    rows: list[Row] = []
    skipped: list[str] = []
    for mv in sorted(reg.versions(model), key=lambda v: int(v.version)):
        try:
            rows.append(version_row(reg, model, mv))
        except ReportError as exc:
            skipped.append(str(exc))
    return rows, skipped


def area_bars(metrics: Mapping[str, float]) -> list[AreaBar]:
    """Per-area all-pass rates with their bounds, candidate and base, by area name."""
    head = f"{ALL_PASS_RATE}."
    bars: dict[str, AreaBar] = {}
    for prefix, field in (("", "post"), (BASELINE_PREFIX, "base")):
        start = prefix + head
        for name, value in metrics.items():
            if not name.startswith(start) or name.endswith(CI_SUFFIXES):
                continue
            key = name[len(start) :]
            if not key:
                continue
            area = area_from_metric_key(key)
            bar = bars.setdefault(area, AreaBar(area=area))
            setattr(bar, field, float(value))
            setattr(bar, f"{field}_low", metrics.get(f"{name}{CI_LOW_SUFFIX}"))
            setattr(bar, f"{field}_high", metrics.get(f"{name}{CI_HIGH_SUFFIX}"))
    return [bars[a] for a in sorted(bars)]


def paired(metrics: Mapping[str, float]) -> Paired:
    def m(name: str) -> float | None:
        return metrics.get(name)

    a, c = DELTA_PREFIX + ALL_PASS_RATE, DELTA_PREFIX + CRITERION_PASS_RATE
    return Paired(
        all_pass_diff=m(a),
        all_pass_low=m(a + CI_LOW_SUFFIX),
        all_pass_high=m(a + CI_HIGH_SUFFIX),
        criterion_diff=m(c),
        criterion_low=m(c + CI_LOW_SUFFIX),
        criterion_high=m(c + CI_HIGH_SUFFIX),
        mcnemar_p=m(MCNEMAR_P),
    )


def _scores(reg: Registry, run_id: str, path: str, notes: list[str]) -> list[float] | None:
    text = reg.artifact_text(run_id, path)
    if text is None:
        notes.append(f"no per-task results at {path}: no score distribution for it")
        return None
    try:
        return [t.n_passed / t.n_criteria for t in parse_results_jsonl(text) if t.n_criteria]
    except ValueError as exc:
        notes.append(f"unreadable per-task results {path}: {exc}")
        return None


def _decision(reg: Registry, run_id: str, notes: list[str]) -> Decision | None:
    for path in DECISION_ARTIFACTS:
        text = reg.artifact_text(run_id, path)
        if text is None:
            continue
        try:
            return Decision.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            notes.append(f"unreadable decision {path}: {str(exc).splitlines()[0]}")
    return None


def timeline(
    tags: Mapping[str, str], version_tags: Mapping[str, str], decision: Decision | None
) -> list[TimelinePoint]:
    """release created -> detected -> each worker stage -> decided -> serving swapped."""
    points = [
        TimelinePoint(label="release created", at=parse_time(tags.get(RELEASE_CREATED_AT_TAG))),
        TimelinePoint(label="detected", at=parse_time(tags.get(DETECTED_AT_TAG))),
    ]
    for stage in WORKER_STAGES:
        points.append(
            TimelinePoint(
                label=stage,
                at=parse_time(tags.get(stage_time_tag(stage, "started"))),
                ended=parse_time(tags.get(stage_time_tag(stage, "ended"))),
            )
        )
    decided = decision.decided_at if decision is not None else None
    decided = decided or parse_time(version_tags.get(PROMOTED_AT_TAG))
    points.append(TimelinePoint(label="decided", at=decided))
    points.append(
        TimelinePoint(label="serving swapped", at=parse_time(version_tags.get(SERVED_AT_TAG)))
    )
    return points


def transcript_link(tracking_uri: str, run_id: str, path: str) -> str:
    """Where a reader opens a run's artifact: the MLflow server's ``get-artifact`` for an
    HTTP tracking URI, else the ``runs:/`` URI (``mlflow artifacts download -a`` takes it)."""
    if tracking_uri.startswith(("http://", "https://")):
        query = urlencode({"path": path, "run_uuid": run_id})
        return f"{tracking_uri.rstrip('/')}/get-artifact?{query}"
    return f"runs:/{run_id}/{path}"


def agent_tasks(reg: Registry, run_id: str, notes: list[str]) -> list[AgentTask]:
    """Per-task agent statistics from the candidate's results (empty: not an agentic suite)."""
    text = reg.artifact_text(run_id, RESULTS_ARTIFACT)
    if text is None:
        return []
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            agent = row.get("agent")
            if not isinstance(agent, dict):
                continue
            criteria = row["criteria"]
            transcript = agent.get("transcript")
            out.append(
                AgentTask(
                    task_id=str(row["task_id"]),
                    score=sum(bool(c.get("passed")) for c in criteria) / max(1, len(criteria)),
                    turns=agent["turns"],
                    tool_calls=agent["tool_calls"],
                    documents_read=agent["documents_read"],
                    documents_present=agent["documents_present"],
                    deliverables=len(agent.get("deliverables") or []),
                    deliverables_expected=agent.get("deliverables_expected", 0),
                    tokens_in=row.get("prompt_tokens", 0),
                    tokens_out=row.get("n_tokens", 0),
                    wall_seconds=agent.get("wall_seconds", 0.0),
                    stop_reason=str(agent.get("stop_reason", "")),
                    transcript=transcript_link(
                        reg.tracking_uri, run_id, f"{EVAL_ARTIFACT_DIR}/{transcript}"
                    )
                    if isinstance(transcript, str) and transcript
                    else None,
                )
            )
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:
            notes.append(f"unreadable agent statistics in {RESULTS_ARTIFACT} line {number}: {exc}")
            return []
    return out


def gather_version(
    reg: Registry, model: str, version: str | None = None, price: Price | None = None
) -> VersionReport:
    """Everything the report shows about ``model`` v``version`` (default: the latest)."""
    mv = resolve_version(reg, model, version)
    metrics, tags = _run_data(reg, model, mv)
    run_id = str(mv.run_id)
    notes: list[str] = []
    version_tags = dict(mv.tags or {})
    decision = _decision(reg, run_id, notes)
    suite_sha = tags.get(SUITE_SHA_TAG)
    points = cost_points(reg, model, suite_sha, run_id, price, notes) if suite_sha else []
    if not suite_sha:
        notes.append(f"run {run_id} has no {SUITE_SHA_TAG} tag: no quality–cost comparison")
    reason = (decision.reason if decision else None) or version_tags.get(DECISION_REASON_TAG)
    return VersionReport(
        registered_model=model,
        version=str(mv.version),
        run_id=run_id,
        release_id=tags.get(RELEASE_ID_TAG) or MISSING,
        base_model=tags.get(BASE_MODEL_TAG),
        suite_sha=suite_sha,
        row=_row(mv, metrics, tags),
        areas=area_bars(metrics),
        base_scores=_scores(reg, run_id, BASELINE_RESULTS_ARTIFACT, notes),
        post_scores=_scores(reg, run_id, RESULTS_ARTIFACT, notes),
        decision_reason=reason,
        checks=list(decision.checks) if decision else [],
        paired=paired(metrics),
        timeline=timeline(tags, version_tags, decision),
        cost_points=points,
        agent_tasks=agent_tasks(reg, run_id, notes),
        notes=notes,
    )
