"""``uptake demo``: the newcomer's first run (docs/demo.md)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

SMALL_ENV = "UPTAKE_DEMO_SMALL"


def demo(
    home: Annotated[
        Path, typer.Option("--home", help="State dir of the demo (an earlier demo's is replaced).")
    ] = Path(".uptake-demo"),
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the stack running for exploring (Ctrl-C stops).")
    ] = False,
    small: Annotated[
        bool,
        typer.Option("--small", help=f"Smaller settings for CI, same path (or {SMALL_ENV}=1)."),
    ] = False,
) -> None:
    """Adopt two tiny local releases end to end: watcher, worker, gate, serving, report."""
    from uptake.demo.run import run_demo  # the stack and MLflow load only when it runs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("kafka", "mlflow", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    small = small or os.environ.get(SMALL_ENV, "") not in ("", "0", "false")
    result = run_demo(home, keep=keep, small=small, console=Console())
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
