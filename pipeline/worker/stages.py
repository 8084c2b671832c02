"""The work of each stage, apart from the bookkeeping around it (``job.py``).

One function per stage (``fetch``, ``preflight``, ``holdout``, ``baseline``, ``train``,
``evaluate``, ``register``): each takes the job's ``StageContext`` and what earlier stages
returned, and returns what it produced (a small typed result). ``Job`` runs them in order
through ``run_stage``, which records a result's ``cached`` flag. ``STAGES`` is the set the
job uses; the pure tests (tests/worker/test_job_front.py) hand in their own.

Each function is safe to run again after a crash or for a second track: fetch and the
baseline are cached by what determines them, training resumes from its run directory, the
candidate's evaluation is kept next to it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pipeline.eval import EvalResult, load_results, run_eval, save_results
from pipeline.eval.holdout import check_holdout
from pipeline.eval.suites import AnySuite
from pipeline.train.recipe import Recipe
from pipeline.worker.failures import PermanentJobFailure, is_oom
from pipeline.worker.job_events import JobEvents
from pipeline.worker.job_spec import JobSpec, safe_name
from pipeline.worker.lease import JobLeaseLost
from pipeline.worker.mlflow_front import ModelVersion, Run, WorkerMlflow
from pipeline.worker.plan import JobPlan
from pipeline.worker.tags import OOM_RETRY_TAG, REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG
from uptake.agent_config import AgentSettings
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASE_MODEL_TAG,
    BASE_REVISION_TAG,
    BASELINE_PREFIX,
    CRITERION_PASS_RATE,
    RECIPE_SHA_TAG,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
    TRACK_TAG,
)
from uptake.settings import JudgeSettings

log = logging.getLogger(__name__)
EvalProgress = Callable[[str, int, int], None]
CANDIDATE_RESULTS = "candidate_results.jsonl"
SCORE_TAG_PREFIX = "uptake.score."  # scores on the model version, for people in the UI


def judge_settings(spec: JobSpec) -> JudgeSettings | None:
    """The judge of the suite's judge criteria; its key is read from the child's env."""
    if not (spec.judge_base_url and spec.judge_model):
        return None
    return JudgeSettings(
        base_url=spec.judge_base_url,
        model=spec.judge_model,
        api_key=os.environ.get("UPTAKE_JUDGE__API_KEY") or None,
    )


def run_suite(
    spec: JobSpec, model_dir: Path, suite: AnySuite, progress: EvalProgress
) -> EvalResult:
    return run_eval(
        model_dir,
        suite,
        batch_size=spec.worker.eval_batch_size,
        max_new_tokens=spec.worker.eval_max_new_tokens,
        judge=judge_settings(spec),
        device="cpu" if spec.worker.device == "cpu" else "auto",
        judge_cache_dir=spec.state_dir / "judge-cache",
        progress=progress,
        allowlist=spec.allowlist,
        repo_id=spec.release.repo_id,
        agent=agent_settings(spec),
        work_dir=spec.state_dir / "agent-eval" / safe_name(f"{spec.track.name}-{model_dir}"),
    )


def agent_settings(spec: JobSpec) -> AgentSettings:
    """The spec's agent settings with the second judge's key from the child's env."""
    key = os.environ.get("UPTAKE_AGENT__SECOND_JUDGE__API_KEY") or None
    second = spec.agent.second_judge.model_copy(update={"api_key": SecretStr(key) if key else None})
    return spec.agent.model_copy(update={"second_judge": second})


def baseline_path(spec: JobSpec, suite: AnySuite) -> Path:
    r = spec.release
    return (
        spec.state_dir
        / "baselines"
        / safe_name(r.repo_id)
        / safe_name(r.revision)
        / f"{suite.sha256}.jsonl"
    )


def cached_baseline(
    spec: JobSpec, model_dir: Path, suite: AnySuite, progress: EvalProgress
) -> tuple[EvalResult, bool]:
    """The base model's evaluation on ``suite`` (computed now or read back) and whether it
    was computed now. Keyed by base revision + suite sha; a lock makes two tracks share it."""
    from filelock import FileLock

    path = baseline_path(spec, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=spec.worker.stage_timeout_s):
        if path.is_file():
            return load_results(path), False
        result = run_suite(spec, model_dir, suite, progress)
        tmp = path.with_suffix(".partial")
        save_results(result, tmp)
        tmp.replace(path)
        return result, True


def check_suite_holdout(recipe: Recipe, suite: AnySuite) -> None:
    """Refuse (permanently) a suite whose task ids or prompts are in the training data: the SFT
    chats and the RL stages' rubric tasks (ids and normalised prompts alike)."""
    stages = [getattr(recipe.stages, name) for name in ("sft", "grpo", "sdpo")]
    try:
        for stage in stages:
            if stage is not None:
                check_holdout(stage.data, suite)
    except Exception as exc:
        raise PermanentJobFailure("holdout", str(exc)) from None


class Rate:
    """ETA from progress: the time this session took per unit of work, times what is left."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def eta(self, done: int, total: int) -> float | None:
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
            return None
        t0, d0 = self._start
        if done <= d0 or now <= t0:
            return None
        return max(0.0, (total - done) * (now - t0) / (done - d0))


# -- the stages ----------------------------------------------------------------------------------


@dataclass
class StageContext:
    """What every stage may use: the job's spec and plan, its MLflow front and run, progress
    events, and the lease's lost flag (training stops between steps when it is set)."""

    spec: JobSpec
    plan: JobPlan
    front: WorkerMlflow
    run: Run
    events: JobEvents
    lease_lost: threading.Event | None = None
    fence: Callable[[], None] = lambda: None  # raises JobLeaseLost unless the lease is ours

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def eval_progress(self, stage: str) -> EvalProgress:
        rate = Rate()

        def hook(part: str, done: int, total: int) -> None:
            if part != "generate":
                return
            self.events.stage(
                stage,
                step=done,
                total_steps=total,
                eta_s=rate.eta(done, total),
                message="generating",
                force=done == total,
            )

        return hook


@dataclass(frozen=True)
class Fetched:
    model_dir: Path
    cached: bool  # the files were on disk already


@dataclass(frozen=True)
class Checked:
    """Preflight's result: the recipe (resolved for the device) and suite the job runs on."""

    recipe: Recipe
    suite: AnySuite


@dataclass(frozen=True)
class Baseline:
    result: EvalResult
    cached: bool  # read back rather than computed now


@dataclass(frozen=True)
class Trained:
    model_dir: Path
    oom_retry: str | None = None  # the halved batch, when the first try ran out of memory


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]


@dataclass(frozen=True)
class Registered:
    version: ModelVersion
    created: bool  # False: a racing worker's version, found by the key


def fetch(ctx: StageContext) -> Fetched:
    from pipeline.worker.fetch import fetch_release

    spec = ctx.spec
    model_dir, fetched = fetch_release(
        spec.release, spec.state_dir, source=spec.source, allowlist=spec.allowlist
    )
    return Fetched(model_dir, cached=not fetched)


def preflight(ctx: StageContext, fetched: Fetched) -> Checked:
    """Load the plan's recipe and suite snapshots (a bad one fails here) and check the model."""
    from pipeline.train import preflight as check_model
    from pipeline.train.mlflow_log import log_refusal

    spec = ctx.spec
    recipe = ctx.plan.recipe("cpu" if spec.worker.device == "cpu" else None)
    suite = ctx.plan.suite()
    report = check_model(fetched.model_dir, recipe, spec.allowlist, repo_id=spec.release.repo_id)
    if report.refusals:
        log_refusal(report, recipe, run_id=ctx.run_id, tracking_uri=spec.tracking_uri)
        reasons = "; ".join(f"{r.check}: {r.reason}" for r in report.refusals)
        raise PermanentJobFailure("preflight", f"model refused: {reasons}")
    return Checked(recipe, suite)


def holdout(ctx: StageContext, checked: Checked) -> None:
    check_suite_holdout(checked.recipe, checked.suite)


def baseline(ctx: StageContext, fetched: Fetched, checked: Checked) -> Baseline:
    result, computed = cached_baseline(
        ctx.spec, fetched.model_dir, checked.suite, ctx.eval_progress("baseline")
    )
    return Baseline(result, cached=not computed)


def train(ctx: StageContext, fetched: Fetched, checked: Checked) -> Trained:
    """Train (resuming from the run folder's checkpoint); out of memory, once more with the
    batch halved, the note tagged on the run first."""
    from pipeline.train.recipe import halved_batch

    recipe = checked.recipe
    try:
        return Trained(_train_once(ctx, fetched.model_dir, recipe, halve=False))
    except Exception as exc:
        if not is_oom(exc):
            raise
        note = halved_batch(recipe)[1]
        log.warning("out of memory in training; retrying once with %s", note)
        ctx.front.set_oom_note(ctx.run_id, OOM_RETRY_TAG, note)
        _free_accelerator()
        return Trained(_train_once(ctx, fetched.model_dir, recipe, halve=True), oom_retry=note)


def _train_once(ctx: StageContext, model_dir: Path, recipe: Recipe, *, halve: bool) -> Path:
    from pipeline.train import train_and_log
    from pipeline.train.launch import needs_launch
    from pipeline.train.recipe import halved_batch
    from pipeline.worker.launched_train import LaunchedTraining

    spec, rid, work = ctx.spec, ctx.run_id, ctx.plan.work_dir
    rate = Rate()

    def progress(p: Any) -> None:
        ctx.events.stage(
            "train",
            step=p.step,
            total_steps=p.total_steps,
            loss=p.loss,
            tokens_per_s=p.tokens_per_s or None,
            eta_s=rate.eta(p.step, p.total_steps),
            message=p.stage,
            reward_mean=getattr(p, "reward_mean", None),  # RL stages only
            force=p.step == p.total_steps,
        )
        if ctx.lease_lost is not None and ctx.lease_lost.is_set():
            raise JobLeaseLost(f"lease on run {rid} lost mid-training")

    if needs_launch(recipe.hardware.num_processes):  # several GPUs: accelerate's ranks
        return LaunchedTraining(
            num_processes=recipe.hardware.num_processes,
            model_dir=model_dir,
            recipe=ctx.plan.recipe_path,  # the snapshot: what the key and the stages read
            recipe_origin=ctx.plan.recipe_origin,
            profile=recipe.profile,
            out_dir=work / "train",
            run_id=rid,
            tracking_uri=spec.tracking_uri,
            allowlist=tuple(spec.allowlist),
            repo_id=spec.release.repo_id,
            halve_batch=halve,
        ).run(progress)
    outcome = train_and_log(
        model_dir,
        halved_batch(recipe)[0] if halve else recipe,
        work / "train",
        tracking_uri=spec.tracking_uri,
        run_id=rid,
        experiment=spec.worker.experiment,
        allowlist=spec.allowlist,
        repo_id=spec.release.repo_id,
        resume=True,
        on_progress=progress,
        judge=judge_settings(spec),  # RL stages' judge criteria: the track's judge, its cache
        judge_cache_dir=spec.state_dir / "judge-cache",
    )
    if outcome.status == "refused" or outcome.result is None:
        raise PermanentJobFailure("train", f"model refused: {outcome.reason}")
    return Path(outcome.result.model_dir)


def _free_accelerator() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate(ctx: StageContext, trained: Trained, checked: Checked, base: Baseline) -> Scores:
    """The candidate on the suite (kept next to the job: a retry reads it back), logged to
    the run with the baseline's scores (agentic suites dispatch inside ``run_eval``)."""
    from pipeline.eval import log_to_mlflow

    cached = ctx.plan.work_dir / CANDIDATE_RESULTS
    if cached.is_file():
        result = load_results(cached)
    else:
        progress = ctx.eval_progress("evaluate")
        result = run_suite(ctx.spec, trained.model_dir, checked.suite, progress)
        save_results(result, cached.with_suffix(".partial"))
        cached.with_suffix(".partial").replace(cached)
    metrics = log_to_mlflow(result, base.result, run_id=ctx.run_id, price=ctx.spec.eval_price())
    return Scores(dict(metrics))


def registration_tags(ctx: StageContext, metrics: dict[str, float]) -> dict[str, str]:
    """The version's tags: release, track, base model and revision, shas, scores."""
    spec, key = ctx.spec, ctx.plan.key
    release = spec.release
    tags = {
        RELEASE_ID_TAG: release.release_id,
        TRACK_TAG: spec.track.name,
        BASE_MODEL_TAG: release.repo_id,
        BASE_REVISION_TAG: release.revision,
        RECIPE_SHA_TAG: key.recipe_sha,
        SUITE_SHA_TAG: key.suite_sha,
    }
    for name in (ALL_PASS_RATE, CRITERION_PASS_RATE):
        for prefix in ("", BASELINE_PREFIX):
            if prefix + name in metrics:
                tags[f"{SCORE_TAG_PREFIX}{prefix}{name}"] = f"{metrics[prefix + name]:.6f}"
    return tags


def register(ctx: StageContext, scores: Scores) -> Registered:
    """One version per key (``WorkerMlflow.create_version`` settles a race on the lowest
    number) and the ``challenger`` alias on it; the job then writes the run's last tags
    (``registered_tags``) with its other last tags and marks it FINISHED. The job asked "is the
    key registered?" before taking the lease; a version created since then by a racer is found
    by ``create_version``'s check."""
    model = ctx.spec.track.registered_model
    ctx.fence()  # right before the write that must happen once
    version, created = ctx.front.create_version(
        model, ctx.run, ctx.plan.key.digest, registration_tags(ctx, scores.metrics)
    )
    if created:
        ctx.front.set_challenger(model, version.version)
    return Registered(version, created)


def registered_tags(version: ModelVersion) -> dict[str, str]:
    """Which version the run became (a re-emit reads it: registration finished)."""
    return {REGISTERED_MODEL_TAG: version.name, REGISTERED_VERSION_TAG: version.version}


def mark_registered(front: WorkerMlflow, version: ModelVersion) -> None:
    """The run's last writes: which version it became, then FINISHED (a re-emit reads the
    version tag to tell a finished registration from one a crash cut short)."""
    front.set_tags(version.run_id, registered_tags(version))
    front.set_status(version.run_id, "FINISHED")


@dataclass(frozen=True)
class StageSet:
    """The stage functions a job runs, in ``WORKER_STAGES`` order but register (the job's own
    bookkeeping through the front). Pure tests replace them."""

    fetch: Callable[[StageContext], Fetched] = fetch
    preflight: Callable[[StageContext, Fetched], Checked] = preflight
    holdout: Callable[[StageContext, Checked], None] = holdout
    baseline: Callable[[StageContext, Fetched, Checked], Baseline] = baseline
    train: Callable[[StageContext, Fetched, Checked], Trained] = train
    evaluate: Callable[[StageContext, Trained, Checked, Baseline], Scores] = evaluate
    register: Callable[[StageContext, Scores], Registered] = register


STAGES = StageSet()
