"""``uptake config``: the settings' generated reference, and the settings in effect.

``reference`` renders docs/configuration.md's (and docs/training.md's recipe) reference from
the models' descriptions (``uptake.config_reference``); ``show`` prints what a service would
load, and from where (``uptake.config_show``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from uptake.config_option import ConfigOption
from uptake.config_reference import PAGES, committed_block, page, render, replace_block
from uptake.config_show import EffectiveSettings, effective_settings
from uptake.errors import InputError

config_app = typer.Typer(
    name="config",
    help="The settings: their reference, and the values in effect.",
    no_args_is_help=True,
)
_SOURCE_STYLE = {"env": "yellow", "file": "cyan", "default": "dim"}


@config_app.command("show")
def show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the effective settings and where each value came from (default, file, env)."""
    effective = effective_settings(config)
    if as_json:
        settings = {e.key: {"value": e.value, "source": e.source} for e in effective.entries}
        typer.echo(json.dumps({"config": effective.config, "settings": settings}))
    else:
        Console().print(_table(effective))


def _table(effective: EffectiveSettings) -> Table:
    table = Table(title=f"uptake settings (config: {effective.config or 'none'})")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", no_wrap=True)
    for e in effective.entries:
        value = e.value if isinstance(e.value, str) else json.dumps(e.value)
        table.add_row(Text(e.key), Text(value), Text(e.source, _SOURCE_STYLE.get(e.source, "")))
    return table


@config_app.command("reference")
def reference(
    page_name: Annotated[
        str,
        typer.Option("--page", help=f"Which reference: {' or '.join(p.name for p in PAGES)}."),
    ] = "settings",
    write: Annotated[
        bool, typer.Option("--write", help="Update every page's generated block instead.")
    ] = False,
    root: Annotated[
        Path, typer.Option("--root", help="The repository root the pages are under.")
    ] = Path("."),
) -> None:
    """Print a settings reference as markdown, generated from the models' descriptions."""
    if not write:
        typer.echo(render(page(page_name)), nl=False)
        return
    for p in PAGES:
        path = root / p.doc
        if not path.is_file():
            raise InputError(f"{path}: not found (run from the repository root, or give --root)")
        text = path.read_text(encoding="utf-8")
        body = render(p)
        if committed_block(text, p.marker) == body:
            typer.echo(f"{path}: up to date")
            continue
        path.write_text(replace_block(text, p.marker, body, str(path)), encoding="utf-8")
        typer.echo(f"{path}: updated")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app)
