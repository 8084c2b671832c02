"""The one list of uptake's services, and of the other modules that add CLI commands.

A service is one ``ServiceSpec`` in ``SERVICES``: the CLI loads its commands from it,
``uptake up`` runs it and waits on its probe, ``uptake status`` asks its status provider, and
the tests hold ``compose.yaml`` to it. Every reference is a module path resolved with
importlib, so this core module names the service packages without importing them (the
import-linter contracts in pyproject.toml hold).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_MODULE = r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*"


class ServiceSpec(BaseModel):
    """One long-running service of the stack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the component name in `uptake up`, its log file and the compose service
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    cli_module: str = Field(pattern=f"^{_MODULE}$")  # its ``register(app)`` adds the command
    command: tuple[str, ...] = Field(min_length=1)  # runs it: ``uptake <command...>``
    # "module:function" ``f(settings, pid) -> address | None``: its address once healthy.
    # None: healthy while the process runs.
    probe: str | None = Field(None, pattern=f"^{_MODULE}:[A-Za-z_][A-Za-z0-9_]*$")
    # "module:function" ``f(settings) -> StatusSection``: its part of ``uptake status``
    status: str | None = Field(None, pattern=f"^{_MODULE}:[A-Za-z_][A-Za-z0-9_]*$")
    # "module:function" ``f(settings) -> str | None``: why ``uptake up`` leaves it out (None:
    # it runs). None: always runs.
    enabled: str | None = Field(None, pattern=f"^{_MODULE}:[A-Za-z_][A-Za-z0-9_]*$")


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="watcher",
        cli_module="watcher.cli",
        command=("watch",),
        probe="watcher.health:stack_probe",
        status="watcher.status:watcher_status",
    ),
    ServiceSpec(
        name="promoter",
        cli_module="registry.cli",
        command=("promoter",),
        status="registry.status:registry_status",
    ),
    ServiceSpec(
        name="serving",
        cli_module="serving.cli",
        command=("serve",),
        probe="serving.health:stack_probe",
    ),
    ServiceSpec(
        name="worker",
        cli_module="pipeline.worker.cli",
        command=("worker",),
        status="pipeline.worker.status:worker_status",
        enabled="pipeline.worker.service:no_tracks_reason",
    ),
)

# Modules that add commands but run no service of their own (the core and the one-shot tools).
TOOL_MODULES: tuple[str, ...] = (
    "uptake.stack_cli",
    "uptake.demo.cli",
    "pipeline.eval.cli",
    "pipeline.train.cli",
    "registry.report.cli",
    "uptake.config_cli",
    "uptake.gc_cli",
)


def command_modules() -> tuple[str, ...]:
    """Every module whose ``register(app)`` the CLI calls, each once, tools first."""
    return tuple(dict.fromkeys((*TOOL_MODULES, *(s.cli_module for s in SERVICES))))


def resolve(ref: str) -> Callable[..., Any]:
    """The function a "module:function" reference names."""
    module, _, name = ref.partition(":")
    func: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return func
