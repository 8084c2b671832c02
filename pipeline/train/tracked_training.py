"""``train_and_log``: post-train a model and record the run in MLflow, refusals included.

This is the training entry point of the pipeline worker (and of ``uptake train --mlflow``): the
worker passes the MLflow run of its adoption job, so training, evaluation and the registered
model share one run, and a progress hook that turns ``TrainProgress`` into ``run.stage``
events. Settings are passed in, never loaded here: the caller owns its configuration.

A model preflight refuses is an expected outcome, not a crash: it is logged as a FAILED run
(the refusals as tags, the report as an artifact) and returned with the reason. Bad input
(recipe, data, run directory) raises InputError before anything is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from pipeline.train.mlflow_log import DEFAULT_EXPERIMENT, log_refusal, log_training
from pipeline.train.preflight import PreflightError, PreflightReport
from pipeline.train.recipe import Recipe, load_recipe
from pipeline.train.results import ProgressHook, TrainResult
from pipeline.train.trainer import train
from pipeline.train.trl_stages import is_main_process
from uptake.settings import JudgeSettings


class TrainOutcome(BaseModel):
    """What ``train_and_log`` did, and the MLflow run it logged into."""

    status: Literal["trained", "refused"]
    run_id: str
    result: TrainResult | None = None  # set when trained
    preflight: PreflightReport
    reason: str | None = None  # one line, set when refused


def train_and_log(
    model_dir: str | Path,
    recipe: Recipe | str | Path,
    out_dir: str | Path,
    *,
    tracking_uri: str,
    run_id: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
    profile: str | None = None,
    resume: bool = False,
    on_progress: ProgressHook | None = None,
    on_preflight: Callable[[PreflightReport], None] | None = None,
    log_model: bool = True,
    judge: JudgeSettings | None = None,
    judge_cache_dir: Path | None = None,
) -> TrainOutcome:
    """Train ``model_dir`` with ``recipe`` into ``out_dir`` (see ``train``), then log params,
    metrics, the preflight report and the merged model to ``tracking_uri``.

    ``run_id``: an existing run to log into, else a new run in ``experiment``. A trained run is
    left as it was (its owner ends it); a refusal marks it FAILED, as the job cannot go on.
    ``allowlist``: the settings' ``trust_remote_code_allowlist``; ``judge``: the track's judge,
    for RL stages with judge criteria.
    """
    resolved = (recipe if isinstance(recipe, Recipe) else load_recipe(recipe)).resolve(profile)
    reports: list[PreflightReport] = []

    def keep_report(report: PreflightReport) -> None:
        reports.append(report)
        if on_preflight is not None:
            on_preflight(report)

    try:
        result = train(
            model_dir,
            resolved,
            out_dir,
            resume=resume,
            on_progress=on_progress,
            allowlist=allowlist,
            repo_id=repo_id,
            on_preflight=keep_report,
            judge=judge,
            judge_cache_dir=judge_cache_dir,
        )
    except PreflightError as exc:
        if not reports:  # not this process's report to log (a non-main rank)
            raise
        refused = log_refusal(
            reports[0], resolved, run_id=run_id, tracking_uri=tracking_uri, experiment=experiment
        )
        return TrainOutcome(status="refused", run_id=refused, preflight=reports[0], reason=str(exc))
    report = PreflightReport.model_validate(result.preflight)
    if not is_main_process():  # under accelerate every rank trains; the main one logs
        return TrainOutcome(status="trained", run_id=run_id or "", result=result, preflight=report)
    logged = log_training(
        result,
        resolved,
        run_id=run_id,
        tracking_uri=tracking_uri,
        experiment=experiment,
        log_model=log_model,
    )
    return TrainOutcome(status="trained", run_id=logged, result=result, preflight=report)
