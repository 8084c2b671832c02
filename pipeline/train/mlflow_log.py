"""Log a training run to MLflow: params, metrics, the preflight report and the merged model.

The model is logged as a plain artifact directory (``model/``), not with the transformers
flavor. Eval and serving load it with ``AutoModelForCausalLM.from_pretrained`` on the directory
``mlflow.artifacts.download_artifacts`` returns, which is the fastest path there is: the flavor
would add a pipeline wrapper, an MLmodel file, pip requirement inference (imports and
environment probing at log time) and a layout that needs ``mlflow.transformers.load_model`` to
read back. The registry does not need a logged-model entity either: a version is created from
``runs:/<run_id>/model`` with ``MlflowClient.create_model_version``.

Every function takes the tracking URI (None: MLflow's own default) and the run to log into, so
the pipeline worker can log a training into the one run of its adoption job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.train.recipe import Recipe
from pipeline.train.results import TrainResult
from uptake.mlflow_contract import RECIPE_SHA_TAG

MLFLOW_PARAM_MAX = 6000
DEFAULT_EXPERIMENT = "uptake-train"


def training_params(result: TrainResult, recipe: Recipe | None = None) -> dict[str, str]:
    """Every param logged for a training run (flat, string values)."""
    from pipeline.train.preflight import PreflightReport

    report = PreflightReport.model_validate(result.preflight)
    params: dict[str, str] = {}
    if recipe is not None:
        params.update(recipe.flat_params())
    params.update(report.mlflow_params())
    params.update({f"hardware.{k}": str(v) for k, v in result.hardware.items()})
    params.update({f"data_sha256.{k}": v for k, v in result.data_sha256.items()})
    params["recipe.sha256"] = result.recipe_sha256
    params["recipe.profile"] = result.profile
    return {k: v[:MLFLOW_PARAM_MAX] for k, v in params.items()}


def training_metrics(result: TrainResult) -> dict[str, float]:
    metrics: dict[str, float] = {
        "train.steps": float(result.steps),
        "train.tokens": float(result.tokens),
        "train.tokens_per_s": result.tokens_per_s,
        "train.wall_s": result.wall_s,
    }
    if result.final_loss is not None:
        metrics["train.final_loss"] = result.final_loss
    for stage in result.stages:
        metrics[f"{stage.name}.steps"] = float(stage.steps)
        metrics[f"{stage.name}.tokens_per_s"] = stage.tokens_per_s
        if stage.final_loss is not None:
            metrics[f"{stage.name}.final_loss"] = stage.final_loss
        for name, series in stage.metrics.items():  # the last step's value as the summary
            if series:
                metrics[f"{stage.name}.{name}.last"] = series[-1][1]
    return metrics


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing (by us or a concurrent caller)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _run_id(client: Any, run_id: str | None, run_name: str, experiment: str) -> str:
    """``run_id``, else the active run, else a new (finished) run in ``experiment``."""
    import mlflow

    if run_id is None and (active := mlflow.active_run()) is not None:
        run_id = active.info.run_id
    if run_id is None:
        experiment_id = ensure_experiment(client, experiment)
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """Params in batches of 100 (the REST API's limit), each value cut to MLflow's maximum."""
    from mlflow.entities import Param

    items = [Param(k, v[:MLFLOW_PARAM_MAX]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def log_refusal(
    report: Any,
    recipe: Recipe | None = None,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> str:
    """Record a model preflight refused (``report``: PreflightReport) as a FAILED run, with
    the refusals as tags and the report as an artifact; no training happened."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run_name = recipe.name if recipe is not None else "preflight"
    run_id = _run_id(client, run_id, run_name, experiment)
    params = dict(report.mlflow_params())
    if recipe is not None:
        params.update(recipe.flat_params())
        params["recipe.sha256"] = recipe.sha256
    _log_params(client, run_id, params)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in report.mlflow_tags().items()])
    client.log_dict(run_id, report.model_dump(mode="json"), "training/preflight.json")
    client.log_text(run_id, "\n".join(report.lines()) + "\n", "training/preflight.txt")
    client.set_terminated(run_id, "FAILED")
    return run_id


def log_training(
    result: TrainResult,
    recipe: Recipe | None = None,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    log_model: bool = True,
    artifact_path: str = "model",
) -> str:
    """Log ``result`` into ``run_id`` (or the active run, or a new one in ``experiment``).
    Returns the run id; a run it did not create is left as it was (running, say)."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from pipeline.train.preflight import PreflightReport

    client = MlflowClient(tracking_uri)
    run_id = _run_id(client, run_id, result.recipe_name, experiment)

    report = PreflightReport.model_validate(result.preflight)
    tags = {RECIPE_SHA_TAG: result.recipe_sha256, **report.mlflow_tags()}
    params = training_params(result, recipe)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in training_metrics(result).items()]
    for stage in result.stages:
        metrics += [Metric(f"{stage.name}.loss", loss, now, step) for step, loss in stage.losses]
        for name, series in stage.metrics.items():  # an RL stage's per-step reward statistics
            metrics += [Metric(f"{stage.name}.{name}", v, now, step) for step, v in series]
    _log_params(client, run_id, params)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])

    client.log_dict(run_id, result.preflight, "training/preflight.json")
    client.log_dict(run_id, result.model_dump(mode="json"), "training/result.json")
    client.log_text(run_id, "\n".join(report.lines()) + "\n", "training/preflight.txt")
    if recipe is not None and recipe.source is not None and Path(recipe.source).is_file():
        client.log_artifact(run_id, str(recipe.source), "training")
    if log_model:
        client.log_artifacts(run_id, str(result.model_dir), artifact_path)
    return run_id
