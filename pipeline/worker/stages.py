"""The work of each stage, apart from the bookkeeping around it (``job.py``).

Each function is safe to run again after a crash or for a second track: fetch and the
baseline are cached by what determines them, training resumes from its run directory, the
candidate's evaluation is kept next to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from pipeline.eval import EvalResult, load_results, run_eval, save_results
from pipeline.eval.holdout import check_holdout
from pipeline.eval.suites import AnySuite
from pipeline.train.recipe import Recipe
from pipeline.worker.failures import PermanentJobFailure
from pipeline.worker.job_spec import JobSpec, safe_name
from uptake.agent_config import AgentSettings
from uptake.settings import JudgeSettings

EvalProgress = Callable[[str, int, int], None]


def judge_settings(spec: JobSpec) -> JudgeSettings | None:
    """The judge of the suite's judge criteria; its key is read from the child's env."""
    if not (spec.judge_base_url and spec.judge_model):
        return None
    return JudgeSettings(
        base_url=spec.judge_base_url,
        model=spec.judge_model,
        api_key=os.environ.get("UPTAKE_JUDGE__API_KEY") or None,
    )


def evaluate(spec: JobSpec, model_dir: Path, suite: AnySuite, progress: EvalProgress) -> EvalResult:
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
        result = evaluate(spec, model_dir, suite, progress)
        tmp = path.with_suffix(".partial")
        save_results(result, tmp)
        tmp.replace(path)
        return result, True


def holdout(recipe: Recipe, suite: AnySuite) -> None:
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
