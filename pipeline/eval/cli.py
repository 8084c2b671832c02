"""``uptake eval``: score a model directory or endpoint on a rubric suite.

Progress goes to stderr, results to stdout: with ``--json`` stdout is exactly one JSON object,
so scripts and CI can pipe it. Expected failures raise InputError (one line, exit code 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from uptake.cost_options import (
    CpuHourPriceOption,
    GpuHourPriceOption,
    PriceInOption,
    PriceOutOption,
)
from uptake.errors import DependencyError, InputError, describe_validation_error
from uptake.formatting import percent, points

EVAL_EXPERIMENT = "uptake-eval"  # where `uptake eval --mlflow` logs (external models too)


def _progress_hook(console: Any) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bars: dict[str, Any] = {}

    def hook(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            label = {"generate": "generating", "grade": "grading"}.get(stage, stage)
            bars[stage] = progress.add_task(label, total=total)
        progress.update(bars[stage], completed=done)

    return progress, hook


def _print_tables(console: Any, summary: dict[str, Any], comparison: Any | None) -> None:
    from rich.table import Table

    ci = summary["ci"]
    head = Table(
        title=f"{summary['suite']} — {summary['n_tasks']} tasks, {summary['n_criteria']} criteria"
    )
    for col in ("metric", "value", f"{round(100 * ci['confidence'])}% CI"):
        head.add_column(col)
    for key, label in (
        ("all_pass_rate", "all-pass rate"),
        ("criterion_pass_rate", "criterion pass rate"),
    ):
        head.add_row(
            label, percent(summary[key]), f"[{percent(ci[key]['low'])}, {percent(ci[key]['high'])}]"
        )
    console.print(head)
    areas = Table(title="per practice area")
    for col in ("area", "tasks", "all-pass", "criterion pass"):
        areas.add_column(col)
    for area, a in summary["per_area"].items():
        areas.add_row(
            area, str(a["n_tasks"]), percent(a["all_pass_rate"]), percent(a["criterion_pass_rate"])
        )
    console.print(areas)
    if comparison is None:
        return
    comp = Table(title=f"paired comparison vs {comparison.baseline_model}")
    for col in ("metric", "baseline", "candidate", "difference", "95% CI"):
        comp.add_column(col)
    for label, d in (
        ("all-pass rate", comparison.all_pass_rate),
        ("criterion pass rate", comparison.criterion_pass_rate),
    ):
        comp.add_row(
            label,
            percent(d.baseline),
            percent(d.candidate),
            points(d.diff),
            f"[{points(d.ci.low)}, {points(d.ci.high)}]",
        )
    console.print(comp)
    mc = comparison.mcnemar
    console.print(
        f"McNemar exact (all-pass): candidate-only {mc.candidate_only}, "
        f"baseline-only {mc.baseline_only}, p = {mc.p_value:.4g}"
    )


def eval_command(
    model: Annotated[
        str, typer.Option("--model", help="Model directory or OpenAI-compatible URL.")
    ],
    suite: Annotated[
        Path,
        typer.Option("--suite", help="Rubric suite (JSONL) or a directory of LAB-format tasks."),
    ],
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline", help="Results JSONL of a baseline run: adds a paired comparison."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the metrics.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write results.jsonl, metrics.json, report.md and plots here."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Generation batch size.")
    ] = 16,
    backend: Annotated[
        str, typer.Option("--backend", help="transformers, openai, or auto (URL → openai).")
    ] = "auto",
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Override the suite's limits.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda[:N].")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", min=1, help="CPU threads for torch (default: 1 below 20M parameters)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Generation and bootstrap seed.")] = 0,
    api_model: Annotated[
        str | None, typer.Option("--api-model", help="Model name for the openai backend.")
    ] = None,
    api_timeout: Annotated[
        float,
        typer.Option("--api-timeout", min=0.1, help="Seconds per request (openai backend)."),
    ] = 300.0,
    judge_base_url: Annotated[
        str | None, typer.Option("--judge-base-url", help="Judge endpoint (overrides settings).")
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option("--judge-model", help="Judge model name.")
    ] = None,
    train_data: Annotated[
        Path | None,
        typer.Option("--train-data", help="Refuse the suite if it overlaps this chat JSONL."),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples.")
    ] = 2000,
    config: Annotated[Path | None, typer.Option("--config", help="uptake YAML config.")] = None,
    repo_id: Annotated[
        str | None,
        typer.Option(
            "--repo-id", help="Hub repo the model came from (matched against the allow-list)."
        ),
    ] = None,
    price_in: PriceInOption = None,
    price_out: PriceOutOption = None,
    gpu_hour_price: GpuHourPriceOption = None,
    cpu_hour_price: CpuHourPriceOption = None,
    to_mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow",
            help="Log the evaluation to a new MLflow run (the report's quality-cost chart "
            "shows every model scored on the suite).",
        ),
    ] = False,
) -> None:
    """Score a model on a rubric suite: all-pass and criterion pass rates, per area, with CIs."""
    from rich.console import Console

    from pipeline.eval.compare import compare
    from pipeline.eval.cost import cost_per_task
    from pipeline.eval.generate import is_url
    from pipeline.eval.holdout import check_holdout
    from pipeline.eval.report import write_report
    from pipeline.eval.results import load_results, save_results
    from pipeline.eval.runner import require_judge, run_eval
    from pipeline.eval.suites import load_suite
    from uptake.cost import Price
    from uptake.settings import load_settings

    settings = load_settings(config)
    try:
        price = Price.of(price_in, price_out, gpu_hour_price, cpu_hour_price)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc)) from None
    judge = settings.judge
    if judge_base_url or judge_model:
        judge = judge.model_copy(
            update={k: v for k, v in (("base_url", judge_base_url), ("model", judge_model)) if v}
        )
    loaded = load_suite(suite)
    require_judge(loaded, judge)
    if train_data is not None:
        check_holdout(train_data, loaded)
    base = load_results(baseline, n_boot=bootstrap, seed=seed) if baseline is not None else None
    if base is not None and base.suite_sha256 != loaded.sha256:
        raise InputError(
            f"baseline {baseline} was scored on a different suite "
            f"(sha256 {base.suite_sha256[:12]}, "
            f"this suite {loaded.sha256[:12]})"
        )

    if backend == "transformers" or (backend == "auto" and not is_url(model)):
        from transformers.utils import logging as hf_logging

        # our bars are enough; theirs garble stderr (transformers leaves it unannotated)
        hf_logging.disable_progress_bar()
    err = Console(stderr=True)
    progress, hook = _progress_hook(err)
    with progress:
        result = run_eval(
            model,
            loaded,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            judge=judge,
            backend=backend,
            seed=seed,
            device=device,
            threads=threads,
            api_model=api_model,
            api_key=os.environ.get("OPENAI_API_KEY"),
            api_timeout_s=api_timeout,
            judge_cache_dir=settings.state_dir / "judge-cache",
            n_boot=bootstrap,
            progress=hook,
            allowlist=settings.trust_remote_code_allowlist,
            repo_id=repo_id,
            agent=settings.agent,
            work_dir=out if out is not None else _agent_dir(settings.state_dir),
        )
    comparison = compare(base, result, n_boot=bootstrap, seed=seed) if base is not None else None
    summary = result.summary()
    summary["cost_per_task"] = cost_per_task(result, price) if price is not None else None
    if comparison is not None:
        summary["comparison"] = comparison.model_dump(mode="json")
    if out is not None:
        save_results(result, out / "results.jsonl")
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_report(result, out, base, comparison)
    if to_mlflow:
        summary["mlflow_run_id"] = _log_run(settings, result, base, price)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    _print_tables(console, summary, comparison)
    cost = summary["cost_per_task"]
    console.print(
        f"tokens in {summary['tokens_in']}, out {summary['tokens_out']}"
        + (f"; cost per task {cost:.6g}" if cost is not None else "")
    )
    if to_mlflow:
        console.print(f"logged to MLflow run {summary['mlflow_run_id']}")
    if out is not None:
        console.print(f"results, report and plots written to {out}")


def _agent_dir(state_dir: Path) -> Path:
    """Where an agentic run without ``--out`` keeps its workspaces and transcripts."""
    import time

    return state_dir / "agent-eval" / time.strftime("%Y%m%d-%H%M%S")


def suite_check_command(
    path: Annotated[Path, typer.Argument(help="A suite: JSONL file or LAB-format directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a suite and print its tasks per practice area, criteria per task, document
    types and the content hash recorded as ``suite_sha``."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.eval.agent.lab import AgenticSuite, check_summary
    from pipeline.eval.suites import load_suite

    loaded = load_suite(path)
    if isinstance(loaded, AgenticSuite):
        summary = check_summary(loaded).model_dump()
    else:
        summary = {
            "name": loaded.name,
            "sha256": loaded.sha256,
            "n_tasks": len(loaded.tasks),
            "n_criteria": loaded.n_criteria,
            "per_area": {a: sum(t.practice_area == a for t in loaded.tasks) for a in loaded.areas},
            "criteria_per_task": {t.id: len(t.criteria) for t in loaded.tasks},
            "document_types": {},
            "n_documents": 0,
        }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    console.print(
        f"suite {summary['name']}: {summary['n_tasks']} tasks, {summary['n_criteria']} criteria, "
        f"{summary['n_documents']} documents"
    )
    console.print(f"sha256 {summary['sha256']}")
    areas = Table("practice area", "tasks")
    for area, n in summary["per_area"].items():
        areas.add_row(area, str(n))
    console.print(areas)
    tasks = Table("task", "criteria")
    for task_id, n in summary["criteria_per_task"].items():
        tasks.add_row(task_id, str(n))
    console.print(tasks)
    if summary["document_types"]:
        types = Table("document type", "files")
        for kind, n in summary["document_types"].items():
            types.add_row(kind, str(n))
        console.print(types)


def _log_run(settings: Any, result: Any, baseline: Any, price: Any) -> str:
    """Log to a new run in the ``uptake-eval`` experiment of the configured MLflow."""
    import mlflow

    from pipeline.eval.mlflow_log import log_to_mlflow
    from uptake.stack.local import resolved_settings
    from uptake.stack.probes import mlflow_healthy

    uri = resolved_settings(settings).tracking_uri
    if not mlflow_healthy(uri, timeout_s=5):
        raise DependencyError(f"MLflow is not reachable at {uri}")
    mlflow.set_tracking_uri(uri)
    # MLflow prints "View run ..." to stdout when a run ends: stdout is for --json only
    with contextlib.redirect_stdout(sys.stderr):
        mlflow.set_experiment(EVAL_EXPERIMENT)
        with mlflow.start_run(run_name=str(result.model)[-200:]) as run:
            log_to_mlflow(result, baseline, price=price)
    return str(run.info.run_id)


def register(app: typer.Typer) -> None:
    """Add ``uptake eval`` to the root CLI."""
    app.command("eval")(eval_command)
    suite_app = typer.Typer(help="Rubric suites: check one before a track uses it.")
    suite_app.command("check")(suite_check_command)
    app.add_typer(suite_app, name="suite")
