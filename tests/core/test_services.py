"""The one list of services (uptake/services.py) is what the CLI, `uptake up` and `uptake
status` use: every entry's command exists, and its probe and status provider resolve."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.core.cli_helpers import run_uptake
from tests.core.cli_tree import cli_command
from uptake.services import SERVICES, ServiceSpec, command_modules, resolve


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_runs_a_command_the_cli_has(service: ServiceSpec) -> None:
    assert cli_command(service.command) is not None, f"no `uptake {' '.join(service.command)}`"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_probe_and_status_provider_resolve_to_functions_of_the_right_shape(
    service: ServiceSpec,
) -> None:
    if service.probe is not None:
        assert list(inspect.signature(resolve(service.probe)).parameters)[:2] == [
            "settings",
            "pid",
        ]
    if service.status is not None:
        assert next(iter(inspect.signature(resolve(service.status)).parameters)) == "settings"


def test_names_are_unique_and_each_cli_module_is_loaded_once() -> None:
    names = [s.name for s in SERVICES]
    assert len(names) == len(set(names))
    modules = command_modules()
    assert len(modules) == len(set(modules))
    assert {s.cli_module for s in SERVICES} <= set(modules)


def test_a_spec_with_a_malformed_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="probe"):
        ServiceSpec(name="x", cli_module="x.cli", command=("x",), probe="x.health.stack_probe")


def test_a_usage_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_uptake("status", "--no-such-flag", home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: No such option: --no-such-flag"
