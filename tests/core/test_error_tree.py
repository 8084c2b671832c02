"""One error tree (``uptake/errors.py``): every public exception of the five packages is an
``UptakeError`` on the branch its module docstring draws, and takes its retryability and exit
code from that branch, never from the instance.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import Counter
from functools import cache

import pytest
import typer

import uptake.cli
import uptake.errors
from pipeline.worker.failures import JobFailed, PermanentJobFailure, RetryableJobFailure
from uptake.errors import (
    ConflictError,
    DependencyError,
    InputError,
    PermanentError,
    UptakeError,
    is_retryable,
)

PACKAGES = ("uptake", "watcher", "pipeline", "registry", "serving")
TREE_LINE = re.compile(r"^(?P<indent> *)[*x+\-·] (?P<name>\w+)(?P<rest>.*)$")
MODULE_NOTE = re.compile(r"\((?P<module>[a-z_]+(?:\.[a-z_]+)+)\)$")


@cache
def _exceptions() -> tuple[type[BaseException], ...]:
    """Every exception class defined at the top of a module of the five packages, private
    ones (``_Interrupted``: control flow, not a failure) aside."""
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            module = importlib.import_module(info.name)
            found += [
                obj
                for attr, obj in vars(module).items()
                if inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not attr.startswith("_")
            ]
    return tuple(found)


def _by_name() -> dict[str, type[BaseException]]:
    return {cls.__name__: cls for cls in _exceptions()}


def _drawn_tree() -> list[tuple[str, str | None, str | None]]:
    """(class, parent drawn above it, module named on its line) for each line of the tree."""
    rows: list[tuple[str, str | None, str | None]] = []
    parents: list[str] = []
    for line in (uptake.errors.__doc__ or "").splitlines():
        match = TREE_LINE.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 2
        parents[depth:] = [match["name"]]
        note = MODULE_NOTE.search(match["rest"].strip())
        rows.append((match["name"], parents[depth - 1] if depth else None, note and note["module"]))
    return rows


def test_every_public_exception_is_an_uptake_error() -> None:
    outside = [
        f"{c.__module__}.{c.__name__}" for c in _exceptions() if not issubclass(c, UptakeError)
    ]
    assert outside == []
    assert len(_exceptions()) > 40  # the walk found the packages' modules, not just a few


def test_no_two_exceptions_share_a_name() -> None:
    counts = Counter(cls.__name__ for cls in _exceptions())
    assert [name for name, n in counts.items() if n > 1] == []


def test_the_docstring_draws_every_exception_under_a_base_it_has() -> None:
    classes = _by_name()
    drawn = _drawn_tree()
    assert sorted(name for name, _, _ in drawn) == sorted(classes)
    for name, parent, module in drawn:
        if parent is not None:
            assert issubclass(classes[name], classes[parent]), f"{name} is drawn under {parent}"
        if module is not None:
            assert classes[name].__module__ == module, name


def _branch(cls: type[BaseException]) -> type[UptakeError]:
    for base in (InputError, DependencyError, PermanentError, ConflictError):
        if issubclass(cls, base):
            return base
    return UptakeError


EXPECTED = {  # branch -> (retryable, exit code)
    InputError: (False, 2),
    DependencyError: (True, 3),
    PermanentError: (False, 1),
    ConflictError: (True, 1),
    UptakeError: (True, 1),
}


def test_retryability_and_exit_code_are_the_branchs() -> None:
    wrong = {
        cls.__name__: (cls.retryable, cls.exit_code)
        for cls in _exceptions()
        if issubclass(cls, UptakeError) and (cls.retryable, cls.exit_code) != EXPECTED[_branch(cls)]
    }
    assert wrong == {}


def test_a_job_failure_is_retryable_or_permanent_by_class() -> None:
    refused = JobFailed.of("preflight", "model refused: remote code", retryable=False)
    down = JobFailed.of("fetch", "hub unreachable", retryable=True)
    assert type(refused) is PermanentJobFailure and isinstance(refused, PermanentError)
    assert type(down) is RetryableJobFailure and not isinstance(down, PermanentError)
    assert (is_retryable(refused), is_retryable(down)) == (False, True)
    assert (refused.stage, refused.reason) == ("preflight", "model refused: remote code")


def test_is_retryable_outside_the_tree() -> None:
    class LibraryError(Exception):
        retryable = False  # as google-auth's errors carry it

    assert is_retryable(ValueError("x")) and is_retryable(ConnectionError("down"))
    assert not is_retryable(LibraryError())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("bad recipe: stages.sft.learning_rate"), 2),
        (DependencyError("MLflow at http://127.0.0.1:1 is not reachable"), 3),
        (PermanentError("model refused: needs trust_remote_code"), 1),
        (ConflictError("the champion moved"), 1),
    ],
)
def test_the_cli_prints_one_line_and_exits_with_the_branchs_code(
    error: UptakeError,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise error

    @app.command()
    def other() -> None:  # two commands, so typer keeps the command name
        pass

    monkeypatch.setattr(uptake.cli, "build_app", lambda: app)
    with pytest.raises(SystemExit) as exit_:
        uptake.cli.main(["fail"])
    assert exit_.value.code == code
    assert capsys.readouterr().err == f"error: {error}\n"
