"""``uptake report``: the adoption report of a registered model version (or of every one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from uptake.config_option import ConfigOption, settings_from
from uptake.cost import Price
from uptake.cost_options import (
    CpuHourPriceOption,
    GpuHourPriceOption,
    PriceInOption,
    PriceOutOption,
)
from uptake.errors import DependencyError, InputError, describe_validation_error
from uptake.stack.local import resolved_settings
from uptake.stack.probes import mlflow_healthy


def report(
    model: Annotated[
        str | None, typer.Option("--model", help="Registered model (default: the first track's).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the latest).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for report.html, report.md and the plots."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="A page for every version plus index.html with the table.")
    ] = False,
    price_in: PriceInOption = None,  # for runs that logged no cost
    price_out: PriceOutOption = None,
    gpu_hour_price: GpuHourPriceOption = None,
    cpu_hour_price: CpuHourPriceOption = None,
    no_mlflow_log: Annotated[
        bool, typer.Option("--no-log", help="Do not log the plots to the MLflow run.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Write the adoption report: table, score distributions, areas, gate, timeline, cost."""
    settings = resolved_settings(settings_from(config))
    if every and version is not None:
        raise InputError("--all reports every version: leave out --version")
    try:
        price = Price.of(price_in, price_out, gpu_hour_price, cpu_hour_price)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc)) from None
    name = model or (
        settings.tracks[0].registered_model if settings.tracks else settings.mlflow.registered_model
    )
    if not mlflow_healthy(settings.tracking_uri, timeout_s=5):
        raise DependencyError(f"MLflow is not reachable at {settings.tracking_uri}")
    from registry.mlflow_registry import Registry  # MLflow: imported when a report is asked for
    from registry.report.write import write_all, write_version

    reg = Registry(settings.tracking_uri)
    target = out or settings.state_dir / "reports" / name
    if every:
        index, written = write_all(reg, name, target, price=price, log_artifacts=not no_mlflow_log)
        typer.echo(f"{len(written)} version report(s) and the summary: {index}")
        return
    files = write_version(reg, name, version, target, price=price, log_artifacts=not no_mlflow_log)
    typer.echo(f"report: {files.html}")
    typer.echo(f"markdown: {files.markdown}")
    if files.logged_to_mlflow:
        typer.echo("plots logged to the MLflow run under report/")


def register(app: typer.Typer) -> None:
    """Add ``uptake report`` to the root CLI."""
    app.command("report")(report)
