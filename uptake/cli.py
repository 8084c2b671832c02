"""The ``uptake`` command line: one typer app that each package adds its commands to.

The local stack's commands (up, broker, mlflow, status) live in ``uptake.stack_cli``, the
demo's in ``uptake.demo.cli``; each service package exposes ``register(app)`` in its own ``cli``
module. Which modules those are is said once, in ``uptake.services``; the ``--config`` option
they all take is ``uptake.config_option``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from uptake.errors import UptakeError
from uptake.services import command_modules


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="uptake",
        help="Adopt new open-weight model releases hands-off.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name in command_modules():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # package not built yet
            raise
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected failures become one line on stderr and an exit code."""
    app = build_app()
    try:
        result = app(args=argv, standalone_mode=False)
    except UptakeError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors (typer's own click): one line, exit 2
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    if isinstance(result, int) and result:  # typer.Exit(code) is returned, not raised
        sys.exit(result)


if __name__ == "__main__":
    main()
