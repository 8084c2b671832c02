"""``uptake watch``: run the watcher (scheduler, webhook receiver, metrics) or poll once."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from uptake.config_option import ConfigOption, settings_from
from uptake.errors import DependencyError
from uptake.service_runtime import Supervisor, stop_event
from uptake.settings import Settings
from uptake.stack.local import resolved_settings

if TYPE_CHECKING:  # the service pulls in huggingface_hub, kafka, SQLAlchemy: load it late
    from watcher.service import WatcherService

log = logging.getLogger("watcher")
console = Console()


def _service(settings: Settings) -> WatcherService:
    """The service, or a one-line error when the broker cannot be reached."""
    from kafka.errors import KafkaError

    from watcher.service import WatcherService

    try:
        return WatcherService(settings)
    except KafkaError as exc:
        raise DependencyError(
            f"watcher cannot reach the broker at {settings.kafka_bootstrap}: {exc}"
        ) from None


def _print_outcomes(outcomes: list) -> None:
    table = Table(title="uptake watch --once")
    for col in ("source", "result", "listed", "new releases", "skipped", "not yet", "error"):
        table.add_column(col)
    for o in outcomes:
        r = o.result
        if o.ok and r is not None:
            result = "baseline" if r.first_run else "ok"
            table.add_row(
                o.source,
                result,
                str(r.scanned),
                str(len(r.released)),
                str(len(r.skipped)),
                str(len(r.deferred)),
                "",
            )
        else:
            table.add_row(o.source, "[red]failed[/red]", "-", "-", "-", "-", str(o.fault))
    console.print(table)


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT: scheduled polls, webhook receiver, metrics.

    The HTTP server runs under a ``Supervisor``: if its thread dies, the watcher exits 1
    with the reason instead of running on without webhooks, metrics and health."""
    from watcher.health import remove_health_file, write_health_file
    from watcher.scheduler import WatchScheduler
    from watcher.server import HttpServer
    from watcher.webhook import build_app

    stop = stop_event()
    supervisor = Supervisor("watcher")
    service = _service(settings)
    scheduler: WatchScheduler | None = None
    http: HttpServer | None = None
    try:
        service.start()
        scheduler = WatchScheduler(service)
        http = HttpServer(
            build_app(service, scheduler.trigger_repo), settings.watcher.host, settings.watcher.port
        ).start()
        supervisor.watch("HTTP server", lambda: http is not None and http.alive)
        write_health_file(settings, http.url)
        scheduler.start()
        if service.pollers:
            log.info(
                "watching %s; webhooks and /metrics on %s", ", ".join(service.pollers), http.url
            )
        else:
            log.info("no sources configured: idle; webhooks and /metrics on %s", http.url)
        supervisor.wait(stop)
        log.info("stopping")
    finally:
        supervisor.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        if http is not None:
            http.stop()
        remove_health_file(settings)
        service.close()


def watch(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Poll every source once and exit (1 if one failed).")
    ] = False,
) -> None:
    """Watch the configured sources and publish new model releases to the releases topic."""
    settings = resolved_settings(settings_from(config))
    if not once:
        serve(settings)
        return
    service = _service(settings)
    try:
        outcomes = service.run_once()
    finally:
        service.close()
    _print_outcomes(outcomes)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        typer.echo(f"error: source {o.source}: {o.fault}", err=True)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(watch)
