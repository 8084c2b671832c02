"""CLI: ``uptake serve``, the OpenAI-compatible server for each track's champion."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from serving.service import ServingService, served_models
from uptake.config_option import ConfigOption, settings_from
from uptake.errors import DependencyError
from uptake.service_runtime import freeze_after_imports, stop_event
from uptake.stack.local import resolved_settings
from uptake.stack.probes import wait_for_mlflow

console = Console(stderr=True)


def serve(
    config: ConfigOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Serve only this registered model.")
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on.")] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=0, max=65535, help="Port (default 8000, or a free one if it is taken)."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help="transformers (default) or vllm (GPU machines)."),
    ] = None,
) -> None:
    """Serve each track's champion over an OpenAI-compatible API, swapping on promotion."""
    settings = resolved_settings(settings_from(config))
    if engine is not None and engine not in ("transformers", "vllm"):
        raise typer.BadParameter(f"{engine!r}: choose transformers or vllm", param_hint="--engine")
    if not wait_for_mlflow(settings.tracking_uri, within_s=45):
        raise DependencyError(f"MLflow is not reachable at {settings.tracking_uri}")
    service = ServingService(
        settings, models=served_models(settings, model), engine=engine, host=host, port=port
    )
    stop = stop_event()
    freeze_after_imports(("mlflow", *service.manager.engine.libraries))
    service.start()
    console.print(f"serving {', '.join(service.models)} on {service.url}/v1")
    try:
        service.wait(stop)
    finally:
        service.stop()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
