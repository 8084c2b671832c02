"""The package boundary is checked by import-linter (`lint-imports`, run by .ci/run).

These run the real tool on a copy of the tree: once as it is (the contracts hold), once with a
service package importing another and the core importing a service (both refused), and once
with an import cycle hidden in a function (refused too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("uptake", "watcher", "pipeline", "registry", "serving")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The five packages and pyproject.toml, copied so a test may add a bad import."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the copy, not the editable install of the real tree, is analysed
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_service_importing_another_or_core_importing_a_service_fails(tree: Path) -> None:
    (tree / "registry" / "shortcut.py").write_text("from watcher import store  # noqa: F401\n")
    (tree / "uptake" / "shortcut.py").write_text("import pipeline.eval  # noqa: F401\n")
    result = _lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "service packages import uptake, never each other BROKEN" in result.stdout
    assert "uptake core imports no service package BROKEN" in result.stdout
    assert "registry.shortcut -> watcher.store" in result.stdout
    assert "uptake.shortcut -> pipeline.eval" in result.stdout


def test_a_cycle_fails_even_when_one_side_imports_inside_a_function(tree: Path) -> None:
    """The cycle ``one_line`` once made: the runtime imported the stack at the top, the stack
    imported the runtime back inside a function."""
    with (tree / "uptake" / "service_runtime.py").open("a") as runtime:
        runtime.write("\nfrom uptake.stack.local import read_stack_info  # noqa: E402, F401\n")
    with (tree / "uptake" / "stack" / "local.py").open("a") as stack:
        stack.write(
            "\n\ndef _late() -> None:\n"
            "    from uptake.service_runtime import stop_event  # noqa: F401\n"
        )
    result = _lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no import cycles BROKEN" in result.stdout
    assert ".service_runtime -> .stack" in result.stdout or ".stack -> .service_runtime" in (
        result.stdout
    )
