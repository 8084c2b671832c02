"""Post-training engine: one model-agnostic TRL recipe for any new base model.

Public API::

    recipe = load_recipe("examples/legal/recipe.yaml")
    report = preflight(model_dir, recipe, allowlist=settings.trust_remote_code_allowlist)
    result = train(model_dir, recipe, out_dir, resume=True, on_progress=hook)
    outcome = train_and_log(model_dir, recipe, out_dir, tracking_uri=uri, run_id=job_run)

Heavy modules (torch, transformers, TRL) are imported inside the functions that need them,
so importing this package, and the ``uptake`` CLI that registers ``uptake train``, stays fast.
"""

from __future__ import annotations

from pipeline.train.mlflow_log import log_training
from pipeline.train.preflight import Adapter, PreflightError, PreflightReport, preflight
from pipeline.train.recipe import Recipe, RecipeError, load_recipe, parse_recipe
from pipeline.train.results import StageResult, TrainProgress, TrainResult
from pipeline.train.tracked_training import TrainOutcome, train_and_log
from pipeline.train.trainer import train

__all__ = [
    "Adapter",
    "PreflightError",
    "PreflightReport",
    "Recipe",
    "RecipeError",
    "StageResult",
    "TrainOutcome",
    "TrainProgress",
    "TrainResult",
    "load_recipe",
    "log_training",
    "parse_recipe",
    "preflight",
    "train",
    "train_and_log",
]
