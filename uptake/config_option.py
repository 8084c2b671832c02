"""What every ``uptake`` command starts with: the ``--config`` option and ``settings_from``.

Each package's ``cli`` module imports these two, so all commands read the config file the same
way and log alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from uptake.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $UPTAKE_CONFIG)."),
]

CHATTY_LOGGERS = (
    *("kafka", "httpx", "httpx2", "httpcore", "urllib3"),
    *("huggingface_hub", "apscheduler"),
)


def settings_from(config: Path | None) -> Settings:
    """Load settings and configure logging; every command starts here."""
    settings = load_settings(config)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # These libraries narrate every connection attempt or request (health probes and Hub
    # polls included) at INFO; keep that for DEBUG only.
    if settings.log_level != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return settings
