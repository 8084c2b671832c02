"""CLI: ``uptake worker [--once] [--gpus 0,1] [--name N] [--config F]``.

Exit codes: 0 every job of the release registered (or was already done), 1 a job failed,
2 a configuration error (no tracks, a missing recipe or suite, bad ``--gpus``), 3 the broker
or MLflow unreachable, or ``--once`` saw no release within ``--timeout``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pipeline.worker.service import GROUP, WorkerService, WorkerStats
from uptake.config_option import ConfigOption, settings_from
from uptake.errors import DependencyError
from uptake.stack.probes import wait_for_mlflow

console = Console(stderr=True)


def _summary(stats: WorkerStats) -> None:
    for r in stats.results:
        if r.ok:
            console.print(f"{r.release_id} [{r.track}]: done", markup=False)
        else:
            where = f" at {r.stage}" if r.stage else ""
            console.print(f"{r.release_id} [{r.track}]: failed{where}: {r.message}", markup=False)


def worker(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Handle one release event, then exit with its outcome.")
    ] = False,
    gpus: Annotated[
        str | None,
        typer.Option("--gpus", help="GPUs of this worker, e.g. 0 or 0,1 (CUDA_VISIBLE_DEVICES)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Stable worker name (default: host name); static member id."),
    ] = None,
    group: Annotated[
        str, typer.Option("--group", help="Consumer group (one per separate pipeline).")
    ] = GROUP,
    static: Annotated[
        bool | None,
        typer.Option(
            "--static-membership/--dynamic-membership",
            help="Consumer group membership (default: static, dynamic on the embedded broker).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="With --once: seconds to wait for a release (default: no limit).",
        ),
    ] = None,
) -> None:
    """Run the pipeline worker: post-train and evaluate each release for every track."""
    settings = settings_from(config)
    service = WorkerService(  # a ConfigError here: one line, exit 2
        settings, name=name, gpus=gpus, group_id=group, static_membership=static
    )
    if not wait_for_mlflow(service.settings.tracking_uri, within_s=45):
        raise DependencyError(f"MLflow is not reachable at {service.settings.tracking_uri}")
    if not once:
        service.run()
        return
    stats = service.run_once(timeout_s=timeout)
    _summary(stats)
    if stats.releases == 0:
        raise DependencyError(f"no release event within {timeout:g} s" if timeout else "stopped")
    if stats.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(worker)
