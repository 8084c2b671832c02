"""Look a command up in the real ``uptake`` CLI, as ``uptake <args>`` would find it."""

from __future__ import annotations

import typer

from uptake.cli import build_app


def cli_command(args: list[str] | tuple[str, ...]) -> object | None:
    """The command that ``uptake <args>`` runs, or None when the CLI has no such command."""
    command: object = typer.main.get_command(build_app())
    for arg in args:
        if arg.startswith("-"):
            break
        subcommands = getattr(command, "commands", {})  # a group (typer vendors its own click)
        if arg not in subcommands:
            return None
        command = subcommands[arg]
    return command
