"""``run_preflight``: every check and tokenizer-side adapter, in the order that keeps it safe.

Remote code is decided first, from files alone; nothing that could run the model's code (its
config, its tokenizer) is loaded before that decision, and a refusal there stops preflight.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.train.hardware import resolve_hardware
from pipeline.train.preflight.checks import (
    check_context_length,
    check_remote_code,
    check_weights,
    load_architecture,
)
from pipeline.train.preflight.features import choose_features
from pipeline.train.preflight.report import PreflightReport, Prepared
from pipeline.train.preflight.tokenizer_adapt import adapt_tokenizer
from pipeline.train.recipe import Recipe
from uptake.errors import InputError


def run_preflight(
    model_dir: str | Path,
    recipe: Recipe,
    allowlist: Iterable[str] = (),
    *,
    repo_id: str | None = None,
) -> Prepared:
    """All checks and tokenizer-side adapters; stops at a refusal that makes loading unsafe."""
    recipe = recipe.resolve()
    hw = resolve_hardware(recipe)
    path = Path(model_dir).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise InputError(f"not a model directory (no config.json): {model_dir}")
    report = PreflightReport(model_dir=str(path), repo_id=repo_id, max_length=recipe.max_length)
    prepared = Prepared(report=report, hardware=hw)
    if not check_remote_code(path, allowlist, repo_id, report):
        return prepared
    check_weights(path, report)
    if not load_architecture(prepared, path):
        return prepared
    check_context_length(prepared.config, recipe, report)
    if not adapt_tokenizer(prepared, path, recipe):
        return prepared
    choose_features(prepared, recipe)
    return prepared


def preflight(
    model_dir: str | Path,
    recipe: Recipe,
    allowlist: Iterable[str] = (),
    *,
    repo_id: str | None = None,
) -> PreflightReport:
    """Inspect ``model_dir`` for ``recipe``: the report lists refusals and the adapters applied."""
    return run_preflight(model_dir, recipe, allowlist, repo_id=repo_id).report
