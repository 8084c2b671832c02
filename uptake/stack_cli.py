"""The local stack's commands: ``up``, ``broker``, ``mlflow`` and ``status``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from uptake.config_option import ConfigOption, settings_from
from uptake.errors import InputError
from uptake.retention import human
from uptake.service_runtime import on_stop_signals
from uptake.settings import Settings
from uptake.stack.local import LocalStack
from uptake.status import StatusReport, collect_status

console = Console()


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _run_stack(
    settings: Settings, include: tuple[str, ...], title: str, config: Path | None = None
) -> None:
    """Start part of the stack, show it, and keep it up until Ctrl-C / SIGTERM."""
    stack = LocalStack(settings, config)
    on_stop_signals(_raise_keyboard_interrupt)  # interrupts whatever the stack is waiting on
    try:
        with console.status(f"starting {title}…"):
            stack.start(include)
        _print_started(stack, title)
        stack.supervise(
            say=lambda line: console.print(line, style="yellow", markup=False, soft_wrap=True)
        )
        console.print("[red]every component was given up; stopping[/red]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()
    console.print("stopped")


def _print_started(stack: LocalStack, title: str) -> None:
    table = Table(title=f"uptake {title}", show_lines=False)
    for col in ("component", "address", "pid", "log"):
        table.add_column(col)
    for proc in stack.processes:
        table.add_row(proc.name, proc.address or "-", str(proc.pid), str(proc.log_path))
    for name, reason in stack.left_out.items():
        table.add_row(name, "not started", "-", Text(reason, style="yellow"))
    if stack.tracking_uri:
        table.caption = f"MLflow UI: {stack.tracking_uri}   Kafka bootstrap: {stack.bootstrap}"
    elif stack.bootstrap:
        table.caption = f"Kafka bootstrap: {stack.bootstrap}"
    console.print(table)
    console.print("Ctrl-C stops everything.")


def up(config: ConfigOption = None) -> None:
    """Start the whole local stack: embedded broker, MLflow and every service."""
    _run_stack(settings_from(config), ("broker", "mlflow", "services"), "stack", config)


def broker(config: ConfigOption = None) -> None:
    """Start only the embedded Kafka-protocol broker (memory storage)."""
    settings = settings_from(config)
    if not settings.embedded_broker:
        raise InputError("UPTAKE_KAFKA_BOOTSTRAP is set: there is no embedded broker to start")
    _run_stack(settings, ("broker",), "broker")


def mlflow(config: ConfigOption = None) -> None:
    """Start only the MLflow tracking server (SQLite under the state dir, webhooks on)."""
    settings = settings_from(config)
    if settings.mlflow_tracking_uri:
        raise InputError("UPTAKE_MLFLOW_TRACKING_URI is set: there is no local MLflow to start")
    _run_stack(settings, ("mlflow",), "mlflow")


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each component.")] = 5.0,
) -> None:
    """Show broker and MLflow reachability and topic offsets. Exit 1 if something is down."""
    settings = settings_from(config)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # failures are in the report
    report = collect_status(settings, timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(_status_json(report)))
    else:
        _print_status(report)
    if not report.healthy:
        raise typer.Exit(1)


def _status_json(report: StatusReport) -> dict[str, Any]:
    data = report.model_dump()
    data["healthy"] = report.healthy
    for topic in data["topics"]:
        topic["messages"] = sum(topic["end_offsets"].values())
    return data


def _print_status(report: StatusReport) -> None:
    health = Table(title="uptake status")
    for col in ("component", "address", "health", "detail"):
        health.add_column(col)
    for comp in (report.broker, report.mlflow):
        mark = "[green]healthy[/green]" if comp.healthy else "[red]down[/red]"
        health.add_row(comp.name, comp.address, mark, comp.detail)
    console.print(health)
    if report.local_stack:
        stack = Table(title=f"uptake up (pid {report.local_stack_pid})")
        for col in ("component", "pid", "state", "restarts", "last exit"):
            stack.add_column(col)
        for name, rec in report.local_stack.items():
            stack.add_row(
                name, str(rec.pid or "-"), rec.state, str(rec.restarts), Text(rec.last_exit or "-")
            )
        console.print(stack)
    topics = Table(title="topics")
    for col in ("topic", "partitions", "messages", "end offsets"):
        topics.add_column(col)
    for t in report.topics:
        if t.exists:
            offsets = " ".join(f"{p}:{o}" for p, o in sorted(t.end_offsets.items()))
            topics.add_row(t.name, str(t.partitions), str(t.messages), offsets)
        else:
            topics.add_row(t.name, "-", "-", "missing")
    console.print(topics)
    if report.disk is not None:
        d = report.disk
        console.print(
            f"state dir {d.path}: {human(d.used_bytes)} used; {human(d.free_bytes)} free of "
            f"{human(d.total_bytes)} on its disk",
            markup=False,
            soft_wrap=True,
        )
    elif report.disk_error:
        console.print(f"state dir: {report.disk_error}", markup=False, style="red")
    for section in report.sections:
        if section.error:
            console.print(f"[red]{section.title}: {section.error}[/red]")
            continue
        table = Table(title=section.title)
        for col in section.columns:
            table.add_column(col)
        for row in section.rows:
            table.add_row(*row)
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(broker)
    app.command()(mlflow)
    app.command()(status)
