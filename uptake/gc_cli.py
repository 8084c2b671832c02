"""``uptake gc [--dry-run]``: apply the disk retention policy to the state dir now.

The same rules the worker applies after each job and serving after each swap
(``uptake.retention``): registered jobs' folders, fetched releases and baselines past the
newest kept, serving's versions past the champion and the newest kept. ``--dry-run`` prints
what would go and the bytes, and deletes nothing. Serving's champions are read from MLflow;
when MLflow does not answer, serving's versions are left as they are (said so), since the
champion cannot be told from the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from uptake.config_option import ConfigOption, settings_from
from uptake.retention import (
    Removal,
    apply,
    disk_use,
    human,
    serving_removals,
    version_folders,
    worker_plan,
)
from uptake.settings import Settings
from uptake.stack.local import resolved_endpoints
from uptake.stack.probes import mlflow_healthy

if TYPE_CHECKING:
    from mlflow import MlflowClient

console = Console()


def _champion(client: MlflowClient, model: str) -> str | None:
    from mlflow.exceptions import MlflowException

    from uptake.mlflow_contract import CHAMPION_ALIAS

    try:
        return str(client.get_model_version_by_alias(model, CHAMPION_ALIAS).version)
    except MlflowException:
        return None  # no such model or alias: nothing is the champion


def serving_plan(settings: Settings) -> tuple[list[Removal], str | None]:
    """Serving's versions that may go, or none and why (MLflow not answering)."""
    root = settings.state_dir / "serving"
    models = [m for m in sorted(root.iterdir()) if m.is_dir()] if root.is_dir() else []
    models = [m for m in models if not m.name.startswith(".") and version_folders(m)]
    if not models:
        return [], None
    _, tracking = resolved_endpoints(settings)
    if not mlflow_healthy(tracking):
        return [], f"MLflow at {tracking} does not answer: serving's versions left as they are"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    removals: list[Removal] = []
    for model in models:
        champion = _champion(client, model.name)
        keep = settings.serving.keep_versions
        removals += serving_removals(model, keep, [champion] if champion else [])
    return removals, None


def gc(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete what the retention policy no longer keeps under the state dir (docs/worker.md)."""
    settings = settings_from(config)
    state: Path = settings.state_dir
    removals = worker_plan(state, settings.worker)
    serving, note = serving_plan(settings)
    removals += serving
    verb = "would delete" if dry_run else "deleting"
    for r in removals:
        console.print(f"{verb} {r.path} ({human(r.bytes)}): {r.why}", markup=False, soft_wrap=True)
    if note:
        console.print(note, markup=False, style="yellow")
    total = sum(r.bytes for r in removals)
    if dry_run:
        console.print(f"{len(removals)} folder(s), {human(total)} would be freed", markup=False)
    else:
        freed = apply(removals)
        console.print(f"{len(removals)} folder(s), {human(freed)} freed", markup=False)
    if state.exists():
        d = disk_use(state)
        console.print(
            f"state dir {d.path}: {human(d.used_bytes)} used; {human(d.free_bytes)} free",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command()(gc)
