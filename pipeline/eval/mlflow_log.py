"""Log an evaluation to MLflow under the names of ``uptake.mlflow_contract``.

The promotion gate reads ``all_pass_rate`` and ``criterion_pass_rate`` (and per-area
``all_pass_rate.<area key>``) and the per-task results artifact from runs, so every name comes
from the contract module; docs/evaluation.md lists them. Logs into the active run, the run
``run_id``, or a new run.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from pipeline.eval.compare import PairedComparison, compare
from pipeline.eval.cost import Price, cost_metrics
from pipeline.eval.metrics import Metrics
from pipeline.eval.report import write_report
from pipeline.eval.results import EvalResult, save_results
from uptake.mlflow_contract import (
    AGENT_BASH_TAG,
    AGENT_DELIVERABLES_RATE,
    AGENT_DOCUMENTS_READ_RATE,
    AGENT_TOOL_CALLS_MEAN,
    AGENT_TURNS_MEAN,
    AGENT_WALL_SECONDS_MEAN,
    ALL_PASS_RATE,
    BASELINE_EVAL_MODEL_TAG,
    BASELINE_PREFIX,
    BASELINE_RESULTS_FILE,
    CI_HIGH_SUFFIX,
    CI_LOW_SUFFIX,
    CRITERION_PASS_RATE,
    DELTA_PREFIX,
    EVAL_ARTIFACT_DIR,
    EVAL_BACKEND_TAG,
    EVAL_MODEL_TAG,
    JUDGE_AGREEMENT,
    JUDGE_ERRORS,
    JUDGES_TAG,
    MCNEMAR_P,
    MEAN_SCORE,
    N_CRITERIA,
    N_TASKS,
    RESULTS_FILE,
    RESULTS_TABLE_ARTIFACT,
    SUITE_SHA_TAG,
    TAG_VALUE_MAX,
    TASKS_CONTEXT_EXCEEDED,
    TASKS_GENERATION_TRUNCATED,
    TRANSCRIPTS_ARTIFACT_DIR,
    TRANSCRIPTS_DIR,
    area_metric,
)


def _rate_metrics(metrics: Metrics, prefix: str = "") -> dict[str, float]:
    out = {
        f"{prefix}{ALL_PASS_RATE}": metrics.all_pass_rate,
        f"{prefix}{CRITERION_PASS_RATE}": metrics.criterion_pass_rate,
        f"{prefix}{ALL_PASS_RATE}{CI_LOW_SUFFIX}": metrics.ci.all_pass_rate.low,
        f"{prefix}{ALL_PASS_RATE}{CI_HIGH_SUFFIX}": metrics.ci.all_pass_rate.high,
        f"{prefix}{CRITERION_PASS_RATE}{CI_LOW_SUFFIX}": metrics.ci.criterion_pass_rate.low,
        f"{prefix}{CRITERION_PASS_RATE}{CI_HIGH_SUFFIX}": metrics.ci.criterion_pass_rate.high,
        f"{prefix}{MEAN_SCORE}": metrics.mean_score,
        f"{prefix}{N_TASKS}": float(metrics.n_tasks),
        f"{prefix}{N_CRITERIA}": float(metrics.n_criteria),
        f"{prefix}{TASKS_CONTEXT_EXCEEDED}": float(metrics.tasks_context_exceeded),
        f"{prefix}{TASKS_GENERATION_TRUNCATED}": float(metrics.tasks_generation_truncated),
    }
    for area, a in metrics.per_area.items():
        if a.all_pass_rate is None or a.criterion_pass_rate is None:
            continue  # an area without tasks has no rate, and 0 would be a lie
        all_pass = area_metric(ALL_PASS_RATE, area, prefix)
        out[all_pass] = a.all_pass_rate
        out[area_metric(CRITERION_PASS_RATE, area, prefix)] = a.criterion_pass_rate
        if a.ci is not None:
            out[f"{all_pass}{CI_LOW_SUFFIX}"] = a.ci.all_pass_rate.low
            out[f"{all_pass}{CI_HIGH_SUFFIX}"] = a.ci.all_pass_rate.high
    return out


BASELINE_TRANSCRIPTS_DIR = f"{EVAL_ARTIFACT_DIR}/baseline_{TRANSCRIPTS_DIR}"


def agent_metrics(result: EvalResult, prefix: str = "") -> dict[str, float]:
    """How an agentic suite's tasks were worked (none for a single-turn suite)."""
    stats = [t.agent for t in result.tasks if t.agent is not None]
    if not stats:
        return {}
    n = len(stats)
    present = sum(s.documents_present for s in stats)
    expected = sum(s.deliverables_expected for s in stats)
    produced = sum(min(len(s.deliverables), s.deliverables_expected) for s in stats)
    out = {
        f"{prefix}{AGENT_TURNS_MEAN}": sum(s.turns for s in stats) / n,
        f"{prefix}{AGENT_TOOL_CALLS_MEAN}": sum(s.tool_calls for s in stats) / n,
        f"{prefix}{AGENT_WALL_SECONDS_MEAN}": sum(s.wall_seconds for s in stats) / n,
        f"{prefix}{JUDGE_ERRORS}": float(result.metrics.criteria_judge_error),
    }
    if present:
        out[f"{prefix}{AGENT_DOCUMENTS_READ_RATE}"] = sum(s.documents_read for s in stats) / present
    if expected:
        out[f"{prefix}{AGENT_DELIVERABLES_RATE}"] = produced / expected
    agreement = result.summary()["agent"]["judge_agreement"]
    if agreement is not None:
        out[f"{prefix}{JUDGE_AGREEMENT}"] = float(agreement)
    return out


def _comparison_metrics(comparison: PairedComparison) -> dict[str, float]:
    out: dict[str, float] = {MCNEMAR_P: comparison.mcnemar.p_value}
    for name, d in (
        (ALL_PASS_RATE, comparison.all_pass_rate),
        (CRITERION_PASS_RATE, comparison.criterion_pass_rate),
    ):
        out[f"{DELTA_PREFIX}{name}"] = d.diff
        out[f"{DELTA_PREFIX}{name}{CI_LOW_SUFFIX}"] = d.ci.low
        out[f"{DELTA_PREFIX}{name}{CI_HIGH_SUFFIX}"] = d.ci.high
    for area, c in comparison.per_area.items():
        out[area_metric(ALL_PASS_RATE, area, DELTA_PREFIX)] = c.all_pass_rate.diff
        out[area_metric(CRITERION_PASS_RATE, area, DELTA_PREFIX)] = c.criterion_pass_rate.diff
    return out


def eval_metrics(
    result: EvalResult,
    baseline: EvalResult | None = None,
    comparison: PairedComparison | None = None,
    price: Price | None = None,
) -> dict[str, float]:
    """Every metric ``log_to_mlflow`` logs, by name (also handy for tests and dashboards).

    Tokens in/out and generation time are always logged; ``price`` adds the cost per task
    (the base model's at the same price: it runs where the candidate runs)."""
    out = _rate_metrics(result.metrics)
    out.update(cost_metrics(result, price))
    out.update(agent_metrics(result))
    if baseline is not None:
        out.update(_rate_metrics(baseline.metrics, prefix=BASELINE_PREFIX))
        out.update(cost_metrics(baseline, price, prefix=BASELINE_PREFIX))
        out.update(agent_metrics(baseline, prefix=BASELINE_PREFIX))
        out.update(_comparison_metrics(comparison or compare(baseline, result)))
    return out


def results_table(result: EvalResult) -> dict[str, list[Any]]:
    """Per-task rows for ``mlflow.log_table`` (column-oriented, JSON-friendly)."""
    table: dict[str, list[Any]] = {
        "task_id": [],
        "practice_area": [],
        "score": [],
        "all_pass": [],
        "n_passed": [],
        "n_criteria": [],
        "failed_criteria": [],
        "failure": [],
        "generation_truncated": [],
        "tokens_in": [],
        "tokens_out": [],
        "prompt": [],
        "response": [],
    }
    for t in result.tasks:
        table["task_id"].append(t.task_id)
        table["practice_area"].append(t.practice_area)
        table["score"].append(t.score)
        table["all_pass"].append(t.all_pass)
        table["n_passed"].append(t.n_passed)
        table["n_criteria"].append(t.n_criteria)
        table["failed_criteria"].append(
            "; ".join(f"{c.id}: {c.reason}" for c in t.criteria if not c.passed)
        )
        table["failure"].append(t.failure or "")
        table["generation_truncated"].append(t.generation_truncated)
        table["tokens_in"].append(t.prompt_tokens)
        table["tokens_out"].append(t.n_tokens)
        table["prompt"].append(t.messages[-1]["content"] if t.messages else "")
        table["response"].append(t.response)
    if any(t.agent is not None for t in result.tasks):
        for column in ("turns", "tool_calls", "documents_read", "deliverables", "stop_reason"):
            table[f"agent_{column}"] = []
        table["transcript"] = []
        for t in result.tasks:
            a = t.agent
            table["agent_turns"].append(a.turns if a else None)
            table["agent_tool_calls"].append(a.tool_calls if a else None)
            table["agent_documents_read"].append(
                f"{a.documents_read}/{a.documents_present}" if a else ""
            )
            table["agent_deliverables"].append(", ".join(a.deliverables) if a else "")
            table["agent_stop_reason"].append(a.stop_reason if a else "")
            table["transcript"].append(
                f"{EVAL_ARTIFACT_DIR}/{a.transcript}" if a and a.transcript else ""
            )
    return table


def log_to_mlflow(
    result: EvalResult,
    baseline: EvalResult | None = None,
    *,
    run_id: str | None = None,
    price: Price | None = None,
) -> dict[str, float]:
    """Log metrics, the per-task table, the plots, report and results JSONL; return the metrics.

    Uses the active run (or ``run_id``); with neither, starts and ends a run of its own.
    ``price``: log the cost per task too (docs/evaluation.md "Cost").
    """
    import mlflow

    comparison = compare(baseline, result) if baseline is not None else None
    metrics = eval_metrics(result, baseline, comparison, price)
    active = mlflow.active_run()
    own_run = run_id is None and active is None
    run = mlflow.start_run() if own_run else None
    started = run or active
    if run_id is not None:
        rid = run_id
    else:
        assert started is not None  # own_run started one when none was active
        rid = started.info.run_id
    try:
        client = mlflow.MlflowClient()
        client.set_tag(rid, SUITE_SHA_TAG, result.suite_sha256)
        client.set_tag(rid, EVAL_MODEL_TAG, result.model[:TAG_VALUE_MAX])
        client.set_tag(rid, EVAL_BACKEND_TAG, result.backend)
        if baseline is not None:
            client.set_tag(rid, BASELINE_EVAL_MODEL_TAG, baseline.model[:TAG_VALUE_MAX])
        if result.judges:
            client.set_tag(rid, JUDGES_TAG, ",".join(result.judges)[:TAG_VALUE_MAX])
        if result.bash_available is not None:
            bash = "offered" if result.bash_available else f"not offered: {result.bash_note}"
            client.set_tag(rid, AGENT_BASH_TAG, bash[:TAG_VALUE_MAX])
        mlflow.log_metrics(metrics, run_id=rid)
        with warnings.catch_warnings():  # pandas 3 deprecation inside mlflow's log_table
            warnings.filterwarnings("ignore", message=".*select_dtypes.*")
            mlflow.log_table(
                results_table(result), artifact_file=RESULTS_TABLE_ARTIFACT, run_id=rid
            )
        with tempfile.TemporaryDirectory(prefix="uptake-eval-") as tmp:
            write_report(result, tmp, baseline, comparison)
            save_results(result, Path(tmp) / RESULTS_FILE)
            if baseline is not None:
                save_results(baseline, Path(tmp) / BASELINE_RESULTS_FILE)
            for path in sorted(Path(tmp).iterdir()):
                client.log_artifact(rid, str(path), EVAL_ARTIFACT_DIR)
        if result.transcripts_dir and Path(result.transcripts_dir).is_dir():
            client.log_artifacts(rid, result.transcripts_dir, TRANSCRIPTS_ARTIFACT_DIR)
        base_transcripts = baseline.transcripts_dir if baseline is not None else None
        if base_transcripts and Path(base_transcripts).is_dir():  # computed now, not cached
            client.log_artifacts(rid, base_transcripts, BASELINE_TRANSCRIPTS_DIR)
    finally:
        if run is not None:
            mlflow.end_run()
    return metrics
