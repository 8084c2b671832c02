"""``uptake train``: post-train a model directory with a recipe, with a rich progress bar.

A thin shell over ``train`` (and ``train_and_log`` with ``--mlflow``): it loads the settings,
draws the preflight report, the progress bar and the summary. The recipe is validated before
torch is imported, so a bad recipe fails in a fraction of a second with one line naming the
field (exit 2). With ``--num-processes N`` (N > 1), or a recipe whose hardware asks for it, the
command re-runs itself under ``accelerate launch`` (FSDP).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.train.preflight import PreflightError
from pipeline.train.recipe import PROFILES, Recipe, halved_batch, load_recipe
from pipeline.train.results import ProgressHook, TrainProgress, TrainResult
from uptake.config_option import ConfigOption

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from pipeline.train.preflight import PreflightReport
    from uptake.settings import Settings

console = Console(stderr=False)


def print_preflight(report: PreflightReport) -> None:
    table = Table(title="preflight", show_header=True, header_style="bold", expand=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("why", overflow="fold")
    table.add_row(
        "model",
        f"{report.architecture or report.model_type} ({report.num_parameters or '?'} params)",
        f"context {report.context_length or '?'}",
    )
    table.add_row(
        "training",
        f"max_length {report.max_length}, {report.attn_implementation}, "
        f"packing {'on' if report.packing else 'off'}, "
        f"grad ckpt {'on' if report.gradient_checkpointing else 'off'}",
        "",
    )
    table.add_row("tokens", f"eos {report.eos_token!r}, pad {report.pad_token!r}", "")
    for a in report.adapters:
        table.add_row(f"[yellow]adapter[/] {a.name}", a.action, a.reason)
    for note in report.notes:
        table.add_row("note", "", note)
    for r in report.refusals:
        table.add_row(f"[red]REFUSED[/] {r.check}", "", r.reason)
    console.print(table)


def print_summary(result: TrainResult) -> None:
    table = Table(title="training summary", show_header=False, expand=False)
    table.add_column("")
    table.add_column("")
    for key, value in result.summary_rows():
        table.add_row(key, value)
    for stage in result.stages:
        loss = f"{stage.final_loss:.4f}" if stage.final_loss is not None else "n/a"
        table.add_row(
            f"stage {stage.name}",
            f"{stage.steps} steps, {stage.tokens:,} tokens, {stage.tokens_per_s:,.0f} tok/s, "
            f"loss {loss}",
        )
    console.print(table)


def _progress_bar() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _bar_updater(bar: Progress) -> ProgressHook:
    """A progress hook that draws one bar per stage."""
    tasks: dict[str, TaskID] = {}

    def on_progress(p: TrainProgress) -> None:
        if p.stage not in tasks:
            tasks[p.stage] = bar.add_task(p.stage, total=p.total_steps, loss="-", tps="-")
        bar.update(
            tasks[p.stage],
            completed=p.step,
            total=p.total_steps,
            loss=f"{p.loss:.4f}" if p.loss is not None else "-",
            tps=f"{p.tokens_per_s:,.0f}",
        )

    return on_progress


def _also_to_file(hook: ProgressHook, path: Path) -> ProgressHook:
    """``hook``, and each update appended to ``path`` as one JSON line, from the main process
    only: how a supervisor (the pipeline worker) follows a training it launched."""
    from pipeline.train.trl_stages import is_main_process

    def on_progress(p: TrainProgress) -> None:
        hook(p)
        if is_main_process():
            with path.open("a", encoding="utf-8") as f:
                f.write(p.model_dump_json() + "\n")

    return on_progress


def _relaunch(**args: Any) -> None:
    """Run this command again under ``accelerate launch`` (``args``: ``accelerate_command``'s),
    one process per GPU; its exit status is ours."""
    from pipeline.train.launch import accelerate_command

    cmd = accelerate_command(**args)
    console.print(f"launching: {shlex.join(cmd)}")
    code = subprocess.call(cmd)
    if code:
        # sys.exit, not typer.Exit: the root runs click with standalone_mode=False,
        # which turns typer.Exit(n) into a return value and loses n.
        sys.exit(code)


def _train_logged(settings: Settings, recipe: Recipe, **args: Any) -> tuple[TrainResult, str]:
    """``train_and_log`` into MLflow: the result and the run id. A refusal is logged there,
    then fails the command."""
    from pipeline.train.tracked_training import train_and_log

    outcome = train_and_log(
        recipe=recipe,
        tracking_uri=settings.tracking_uri,
        allowlist=settings.trust_remote_code_allowlist,
        **args,
    )
    if outcome.result is None:
        console.print(f"logged the refusal to MLflow run {outcome.run_id}")
        raise PreflightError(outcome.reason or "preflight refused the model")
    return outcome.result, outcome.run_id


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        model: Path = typer.Option(..., "--model", help="base model directory (safetensors)"),
        recipe: Path = typer.Option(..., "--recipe", help="recipe YAML file"),
        out: Path = typer.Option(..., "--out", help="run directory; the model lands in OUT/model"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in OUT"),
        num_processes: int | None = typer.Option(
            None, "--num-processes", min=1, help="GPUs to use; > 1 runs under accelerate (FSDP)"
        ),
        profile: str | None = typer.Option(
            None, "--profile", help=f"hardware profile {PROFILES} (default: detected)"
        ),
        repo_id: str | None = typer.Option(
            None, "--repo-id", help="hub repo id of the model (matched against the allow-list)"
        ),
        mlflow: bool = typer.Option(
            False, "--mlflow", help="log params, metrics and the model to MLflow"
        ),
        run_id: str | None = typer.Option(
            None, "--run-id", help="log into this MLflow run (implies --mlflow)"
        ),
        progress_file: Path | None = typer.Option(
            None, "--progress-file", help="append each progress update to this file (JSON lines)"
        ),
        halve_batch: bool = typer.Option(
            False,
            "--halve-batch",
            help="half the per-device batch, twice the accumulation (after an out-of-memory)",
        ),
        recipe_origin: Path | None = typer.Option(
            None,
            "--recipe-origin",
            hidden=True,
            help="RECIPE is a copy of this file: relative data paths are anchored at its folder",
        ),
        config: ConfigOption = None,
    ) -> None:
        """Post-train MODEL with RECIPE; writes a merged, self-contained model to OUT/model."""
        from uptake.errors import InputError
        from uptake.settings import load_settings

        spec = load_recipe(recipe, recipe_origin)  # exit 2 on a bad recipe, before torch
        if profile is not None and profile not in PROFILES:
            raise InputError(f"--profile: expected one of {PROFILES}, got {profile!r}")
        resolved = spec.resolve(profile)
        if halve_batch:
            resolved, note = halved_batch(resolved)
            console.print(f"halved batch: {note}")
        settings = load_settings(config)  # exit 2 on a bad config, before any work

        from pipeline.train.launch import needs_launch

        processes = num_processes or resolved.hardware.num_processes
        if needs_launch(processes):
            _relaunch(
                num_processes=processes,
                profile=resolved.profile,
                model=model,
                recipe=recipe,
                recipe_origin=recipe_origin,
                out=out,
                resume=resume,
                repo_id=repo_id,
                config=config,
                mlflow=mlflow,
                run_id=run_id,
                progress_file=progress_file,
                halve_batch=halve_batch,
            )
            return

        from pipeline.train.trainer import train

        logged_run: str | None = None
        with _progress_bar() as bar:
            on_progress = _bar_updater(bar)
            if progress_file is not None:
                on_progress = _also_to_file(on_progress, progress_file)
            if mlflow or run_id is not None:
                result, logged_run = _train_logged(
                    settings,
                    resolved,
                    model_dir=model,
                    out_dir=out,
                    resume=resume,
                    repo_id=repo_id,
                    run_id=run_id,
                    on_progress=on_progress,
                    on_preflight=print_preflight,
                )
            else:
                result = train(
                    model,
                    resolved,
                    out,
                    resume=resume,
                    on_progress=on_progress,
                    allowlist=settings.trust_remote_code_allowlist,
                    repo_id=repo_id,
                    on_preflight=print_preflight,
                )
        print_summary(result)
        if logged_run is not None:
            console.print(f"logged to MLflow run {logged_run}")
