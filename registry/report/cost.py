"""The quality–cost points: every model scored on the same suite, with what one task costs.

A run scored on the suite (same ``uptake.suite_sha``) gives up to two models: the one it
evaluated (a post-trained candidate, or an external model scored with ``uptake eval
--mlflow``) and, when it logged a paired baseline, the base model. The cost of a task is the
``cost_per_task`` the evaluation logged; when it logged none and the report is given a price,
it is computed here from the logged tokens and generation time with uptake.cost's formula,
the one the eval engine uses (docs/evaluation.md "Cost").
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from registry.mlflow_registry import Registry
from registry.report.model import CostKind, CostPoint
from uptake.cost import Price, task_cost
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASE_MODEL_TAG,
    BASELINE_EVAL_MODEL_TAG,
    BASELINE_PREFIX,
    COST_PER_TASK,
    CRITERION_PASS_RATE,
    EVAL_MODEL_TAG,
    GENERATION_SECONDS,
    N_TASKS,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
    TOKENS_IN,
    TOKENS_OUT,
)

MAX_RUNS = 1000  # runs on one suite: a report compares tens, never more than this


def run_task_cost(
    metrics: Mapping[str, float], price: Price | None, prefix: str = ""
) -> float | None:
    """One task's cost from a run's metrics: the logged figure, else priced here, else None."""
    logged = metrics.get(prefix + COST_PER_TASK)
    if logged is not None:
        return float(logged)
    if price is None:
        return None
    return task_cost(
        price,
        metrics.get(prefix + N_TASKS) or 0,
        tokens_in=metrics.get(prefix + TOKENS_IN),
        tokens_out=metrics.get(prefix + TOKENS_OUT),
        generation_seconds=metrics.get(prefix + GENERATION_SECONDS),
    )


def _point(
    label: str,
    kind: CostKind,
    run_id: str,
    metrics: Mapping[str, float],
    price: Price | None,
    prefix: str = "",
) -> CostPoint | None:
    all_pass = metrics.get(prefix + ALL_PASS_RATE)
    criterion = metrics.get(prefix + CRITERION_PASS_RATE)
    if all_pass is None or criterion is None:
        return None
    n = metrics.get(prefix + N_TASKS) or 0

    def per_task(name: str) -> float | None:
        value = metrics.get(prefix + name)
        return value / n if value is not None and n else None

    return CostPoint(
        label=label,
        kind=kind,
        run_id=run_id,
        all_pass=all_pass,
        criterion=criterion,
        cost_per_task=run_task_cost(metrics, price, prefix),
        tokens_in_per_task=per_task(TOKENS_IN),
        tokens_out_per_task=per_task(TOKENS_OUT),
        seconds_per_task=per_task(GENERATION_SECONDS),
    )


def _runs_on_suite(reg: Registry, suite_sha: str) -> list[Run]:
    client = reg.client
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    escaped = suite_sha.replace("'", "\\'")
    runs: list[Run] = []
    for start in range(0, len(experiments), 100):  # search_runs takes a bounded id list
        runs += client.search_runs(
            experiments[start : start + 100],
            filter_string=f"tags.`{SUITE_SHA_TAG}` = '{escaped}'",
            max_results=MAX_RUNS,
            order_by=["attributes.start_time ASC"],
        )
    return runs[:MAX_RUNS]


def cost_points(
    reg: Registry,
    model: str,
    suite_sha: str,
    this_run: str,
    price: Price | None,
    notes: list[str],
) -> list[CostPoint]:
    """Every model scored on ``suite_sha``, one point each (a base scored twice: its latest
    priced score)."""
    try:
        runs = _runs_on_suite(reg, suite_sha)
        versions = {mv.run_id: str(mv.version) for mv in reg.versions(model)}
        champion_version = reg.champion(model)
    except MlflowException as exc:
        notes.append(f"cannot search runs on the suite: {exc.message}")
        return []
    points: dict[str, CostPoint] = {}
    for run in runs:
        rid = run.info.run_id
        metrics = dict(run.data.metrics)
        tags = dict(run.data.tags)
        base = tags.get(BASE_MODEL_TAG) or tags.get(BASELINE_EVAL_MODEL_TAG)
        version = versions.get(rid)
        if version is not None:
            kind: CostKind = "champion" if version == champion_version else "candidate"
            label = f"{model} v{version}" + (f" ({base} post-trained)" if base else "")
        else:
            kind = "candidate" if tags.get(RELEASE_ID_TAG) else "external"
            label = tags.get(EVAL_MODEL_TAG) or run.info.run_name or rid
        point = _point(label, kind, rid, metrics, price)
        if point is not None:
            point.this_version = rid == this_run
            points[f"{kind}:{label}:{rid}"] = point
        base_point = _point(
            base or f"base of {label}", "base", rid, metrics, price, BASELINE_PREFIX
        )
        seen = points.get(f"base:{base_point.label}") if base_point is not None else None
        if base_point is not None and (seen is None or base_point.cost_per_task is not None):
            points[f"base:{base_point.label}"] = base_point  # the latest, a priced one first
    out = list(points.values())
    if out and all(p.cost_per_task is None for p in out):
        notes.append(
            "no cost per task logged on this suite: give the worker an hour price "
            "(`worker.cpu_hour_price` / `worker.gpu_hour_price`), score with `uptake eval "
            "--price-in/--price-out` or `--gpu-hour-price` / `--cpu-hour-price`, or give the "
            "report a price"
        )
    return out
