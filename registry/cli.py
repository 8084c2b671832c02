"""CLI: ``promoter``, ``alerter``, ``approve``, ``reject``, ``history``, ``rollback``."""

from __future__ import annotations

import getpass
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from uptake.config_option import ConfigOption, settings_from
from uptake.errors import DependencyError, InputError
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_BY_TAG,
    APPROVAL_REJECTED,
    APPROVAL_TAG,
    DECISION_REASON_TAG,
    DECISION_TAG,
    ApprovalVerdict,
)
from uptake.service_runtime import stop_event
from uptake.settings import Settings
from uptake.stack.local import resolved_settings
from uptake.stack.probes import mlflow_healthy

if TYPE_CHECKING:
    from registry.mlflow_registry import Registry

# MLflow, SQLAlchemy and Kafka are imported by the commands that use them: this module is
# registered for every ``uptake`` command, and MLflow alone takes about a second and a half

log = logging.getLogger(__name__)
console = Console()

Model = Annotated[str, typer.Argument(help="Registered model name, e.g. uptake-legal.")]
Version = Annotated[str, typer.Argument(help="Model version number.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _settings(config: Path | None) -> Settings:
    settings = resolved_settings(settings_from(config))
    if not mlflow_healthy(settings.tracking_uri, timeout_s=5):
        raise DependencyError(f"MLflow is not reachable at {settings.tracking_uri}")
    return settings


def promoter(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Handle what is queued, reconcile once, exit.")
    ] = False,
    alerts: Annotated[
        bool, typer.Option("--alerts/--no-alerts", help="Run the alerter in this process.")
    ] = True,
) -> None:
    """Run the promoter: gate candidates, act on approvals, move the champion alias."""
    from registry.service import PromoterService

    settings = settings_from(config)
    service = PromoterService(settings, alerts=alerts and not once)
    if once:
        handled = service.run_once()
        console.print(f"handled {handled} candidate event(s); reconciled once")
        return
    stop = stop_event()
    service.start()
    try:
        service.wait(stop)  # a consumer that dies: ServiceFailed, one line, exit 1
    finally:
        service.stop()


def alerter(config: ConfigOption = None) -> None:
    """Run only the alerter (when the promoter runs with --no-alerts or elsewhere)."""
    from registry.alerts.service import AlerterService

    settings = resolved_settings(settings_from(config))
    if not settings.alerts.channels:
        raise InputError("no alert channels configured (alerts.channels); see docs/alerts.md")
    stop = stop_event()
    service = AlerterService(settings).start()
    try:
        service.wait(stop)  # its consumer dying: ServiceFailed, one line, exit 1
    finally:
        service.stop()


def _set_approval(
    registry: Registry, model: str, version: str, verdict: ApprovalVerdict, by: str
) -> None:
    """Exactly the tag a person sets in the MLflow UI, plus who set it (written first)."""
    registry.set_version_tags(model, version, {APPROVAL_BY_TAG: by})
    registry.set_version_tags(model, version, {APPROVAL_TAG: verdict})


def _verdict(
    verdict: ApprovalVerdict,
    model: str,
    version: str,
    config: Path | None,
    by: str | None,
    wait: float,
) -> None:
    from registry.mlflow_registry import Registry

    settings = _settings(config)
    registry = Registry(settings.tracking_uri)
    if registry.find_version(model, version) is None:
        raise InputError(f"{model} has no version {version}")
    who = by or getpass.getuser()
    _set_approval(registry, model, version, verdict, who)
    console.print(f"{model} v{version}: {APPROVAL_TAG}={verdict} (by {who})")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        tags = registry.version(model, version).tags or {}
        if tags.get(DECISION_TAG) in ("promoted", "rejected"):
            console.print(f"decision: {tags[DECISION_TAG]} — {tags.get(DECISION_REASON_TAG, '')}")
            return
        time.sleep(0.5)
    if wait:
        raise DependencyError(f"no decision within {wait:.0f}s: is `uptake promoter` running?")
    console.print("the promoter acts on it via the MLflow webhook or its next reconcile pass")


By = Annotated[str | None, typer.Option("--by", help="Who decides (default: your user name).")]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the promoter's decision.")]


def approve(
    model: Model, version: Version, config: ConfigOption = None, by: By = None, wait: Wait = 0
) -> None:
    """Approve a pending candidate: the same as setting its tag approval=approved in MLflow."""
    _verdict(APPROVAL_APPROVED, model, version, config, by, wait)


def reject(
    model: Model, version: Version, config: ConfigOption = None, by: By = None, wait: Wait = 0
) -> None:
    """Reject a pending candidate: the same as setting its tag approval=rejected in MLflow."""
    _verdict(APPROVAL_REJECTED, model, version, config, by, wait)


def _change(previous: object, version: object) -> str:
    return f"{f'v{previous}' if previous else '-'} → v{version}"


def history(
    model: Model,
    config: ConfigOption = None,
    as_json: AsJson = False,
    from_mlflow: Annotated[
        bool, typer.Option("--from-mlflow", help="Read the mirror in MLflow tags instead.")
    ] = False,
) -> None:
    """Print the audit trail of champion changes of MODEL."""
    from registry import audit
    from registry.db import make_engine
    from registry.mlflow_registry import Registry

    if from_mlflow:
        settings = _settings(config)
        rows = audit.read_mirror(Registry(settings.tracking_uri), model)
        if as_json:
            typer.echo(json.dumps(rows))
            return
        entries = [
            (
                str(r["seq"]),
                str(r.get("at")).replace("T", " ")[:19],
                _change(r.get("prev"), r.get("v")),
                str(r.get("reason")),
                str(r.get("by")),
                str(r.get("why", "")),
            )
            for r in rows
        ]
    else:
        engine = make_engine(settings_from(config))
        items = audit.read(engine, model)
        if as_json:
            typer.echo(json.dumps([e.model_dump(mode="json") for e in items]))
            return
        entries = [
            (
                str(e.seq),
                e.decided_at.strftime("%Y-%m-%d %H:%M:%S"),
                _change(e.previous_version, e.version),
                e.reason,
                e.decided_by,
                e.detail,
            )
            for e in items
        ]
    table = Table(title=f"champion history of {model}")
    for col in ("#", "when (UTC)", "champion", "reason", "decided by", "detail"):
        table.add_column(col)
    for row in entries:
        table.add_row(*row)
    console.print(table if entries else f"no champion changes recorded for {model}")


def rollback(
    model: Model,
    to: Annotated[str | None, typer.Option("--to", help="Version to restore.")] = None,
    config: ConfigOption = None,
    by: By = None,
    note: Annotated[str, typer.Option("--note", help="Why (kept in the audit trail).")] = "",
) -> None:
    """Restore the previous champion of MODEL (or --to VERSION), audited and announced."""
    from registry.context import Context
    from registry.rollback import rollback as do_rollback
    from registry.service import PRODUCER, make_context
    from uptake.bus import EventProducer

    settings = _settings(config)
    try:
        producer: EventProducer | None = EventProducer(settings, producer_name=PRODUCER)
    except Exception as exc:
        log.warning("broker unreachable (%s): champion.changed stays in the outbox", exc)
        producer = None
    ctx: Context = make_context(settings, producer)
    try:
        entry = do_rollback(ctx, model, to, by or getpass.getuser(), note)
    finally:
        if producer is not None:
            producer.close()
    pending = ctx.outbox.pending()
    console.print(
        f"{model}: champion v{entry.previous_version} -> v{entry.version} (history #{entry.seq})"
    )
    if pending:
        console.print(
            f"[yellow]{pending} event(s) not yet published; the promoter publishes them[/yellow]"
        )


def register(app: typer.Typer) -> None:
    app.command()(promoter)
    app.command()(alerter)
    app.command()(approve)
    app.command()(reject)
    app.command()(history)
    app.command()(rollback)
