"""The rubric as an RL reward: each rollout graded exactly as evaluation grades it.

``RubricReward`` is a TRL reward function (``f(prompts, completions, completion_ids, **columns)
-> list[float | None]``). Every criterion goes through ``pipeline.eval.runner.grade_criterion``:
deterministic checks in-process, judge criteria through the track's judge with its cache,
timeouts and retries. The reward is the weighted fraction of criteria passed (RaR) plus
``all_pass_bonus`` when all pass. A judge that fails gives ``None`` for that rollout (TRL does
not credit it) and is counted; it never stops the stage.

Each call also records the step's statistics (``StepStats``: reward mean/std, criterion and
all-pass rates, groups with no reward spread, judge calls and cache hits, tokens generated),
appended to a JSONL file so a resumed stage keeps the series, and a text of each rollout's
failed criteria that SDPO's teacher reads as feedback.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.eval.judge import Judge, JudgeError
from pipeline.eval.runner import grade_criterion
from pipeline.eval.suite import Task

log = logging.getLogger(__name__)


class CriterionGrade(BaseModel):
    id: str
    description: str
    type: str
    weight: float
    passed: bool
    reason: str


class RolloutGrade(BaseModel):
    """One rollout's grade; ``criteria`` is empty when the judge failed (``error`` says why)."""

    task_id: str
    criteria: list[CriterionGrade]
    judge_calls: int = 0
    cache_hits: int = 0
    error: str | None = None

    @property
    def all_passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.criteria)

    def failed(self) -> list[CriterionGrade]:
        return [c for c in self.criteria if not c.passed]


def rubric_reward(criteria: Sequence[CriterionGrade], all_pass_bonus: float) -> float:
    """Weighted fraction of criteria passed, plus ``all_pass_bonus`` when every one passed."""
    total = sum(c.weight for c in criteria)
    if total <= 0:
        return 0.0
    score = sum(c.weight for c in criteria if c.passed) / total
    return score + (all_pass_bonus if all(c.passed for c in criteria) else 0.0)


def feedback_text(grade: RolloutGrade) -> str | None:
    """The failed criteria of a rollout (with the grader's reason), for SDPO's teacher; None
    when nothing failed or the grade is unknown."""
    failed = grade.failed() if grade.error is None else []
    if not failed:
        return None
    return "\n".join(f"- {c.description} ({c.reason})" for c in failed)


def grade_rollout(task: Task, response: str, judge: Judge | None) -> RolloutGrade:
    """Grade every criterion of ``task`` on ``response``; a judge failure is recorded, not
    raised."""
    grades: list[CriterionGrade] = []
    calls = hits = 0
    for criterion in task.criteria:
        try:
            passed, reason, source = grade_criterion(task, criterion, response, judge)
        except JudgeError as exc:
            return RolloutGrade(
                task_id=task.id, criteria=[], judge_calls=calls + 1, cache_hits=hits, error=str(exc)
            )
        calls += source == "judge"
        hits += source == "cache"
        grades.append(
            CriterionGrade(
                id=criterion.id,
                description=criterion.description,
                type=criterion.check.type,
                weight=criterion.weight,
                passed=passed,
                reason=reason,
            )
        )
    return RolloutGrade(task_id=task.id, criteria=grades, judge_calls=calls, cache_hits=hits)


class StepStats(BaseModel):
    """What one generation batch of rollouts scored (logged per step to MLflow)."""

    step: int
    rollouts: int
    reward_mean: float
    reward_std: float
    criterion_pass_rate: float
    all_pass_rate: float
    zero_spread_groups: float  # share of prompt groups whose rewards were all equal
    judge_calls: int
    judge_cache_hits: int
    judge_failures: int
    tokens_generated: int

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.model_dump().items() if k != "step"}


def _text(completion: Any) -> str:
    """A completion as text: TRL passes ``[{"role": "assistant", "content": ...}]`` for chats."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def step_stats(
    step: int,
    grades: Sequence[RolloutGrade],
    rewards: Sequence[float | None],
    num_generations: int,
    tokens: int,
) -> StepStats:
    known = [r for r in rewards if r is not None]
    graded = [g for g in grades if g.error is None]
    criteria = [c for g in graded for c in g.criteria]
    spreads = []
    for start in range(0, len(rewards), num_generations):
        group = [r for r in rewards[start : start + num_generations] if r is not None]
        spreads.append(len(group) < 2 or max(group) - min(group) < 1e-9)
    return StepStats(
        step=step,
        rollouts=len(grades),
        reward_mean=statistics.fmean(known) if known else math.nan,
        reward_std=statistics.stdev(known) if len(known) > 1 else 0.0,
        criterion_pass_rate=sum(c.passed for c in criteria) / len(criteria) if criteria else 0.0,
        all_pass_rate=sum(g.all_passed for g in graded) / len(graded) if graded else 0.0,
        zero_spread_groups=sum(spreads) / len(spreads) if spreads else 0.0,
        judge_calls=sum(g.judge_calls for g in grades),
        judge_cache_hits=sum(g.cache_hits for g in grades),
        judge_failures=sum(g.error is not None for g in grades),
        tokens_generated=tokens,
    )


class RubricReward:
    """TRL reward function over rubric tasks; rows carry the task id in column ``task_id``."""

    __name__ = "rubric"  # TRL names a reward function's metrics after it

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        all_pass_bonus: float,
        num_generations: int,
        judge: Judge | None = None,
        concurrency: int = 4,
        series_path: Path | None = None,
        write_series: bool = True,
    ) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.all_pass_bonus = all_pass_bonus
        self.num_generations = num_generations
        self.judge = judge
        self.concurrency = concurrency if judge is not None else 1
        self.series_path = series_path
        self.write_series = write_series
        self.series: list[StepStats] = []
        self.last_grades: list[RolloutGrade] = []
        self.last_feedback: list[str | None] = []

    def resume_series(self, up_to_step: int | None) -> None:
        """Read back the series a killed attempt wrote, up to its checkpoint's step."""
        self.series = []
        if self.series_path is None or not self.series_path.is_file():
            return
        kept = []
        for line in self.series_path.read_text(encoding="utf-8").splitlines():
            try:
                stats = StepStats.model_validate_json(line)
            except ValueError:
                continue  # a line cut by the kill
            if up_to_step is not None and stats.step <= up_to_step:
                kept.append(stats)
        self.series = kept
        if self.write_series:
            self.series_path.parent.mkdir(parents=True, exist_ok=True)
            self.series_path.write_text(
                "".join(s.model_dump_json() + "\n" for s in kept), encoding="utf-8"
            )

    @property
    def latest_mean(self) -> float | None:
        if not self.series or math.isnan(self.series[-1].reward_mean):
            return None
        return self.series[-1].reward_mean

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        task_id: Sequence[str] | None = None,
        trainer_state: Any = None,
        **_: Any,
    ) -> list[float | None]:
        if task_id is None or len(task_id) != len(completions):
            raise ValueError("rubric reward needs a task_id column, one per completion")
        texts = [_text(c) for c in completions]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            grades = list(
                pool.map(
                    lambda pair: grade_rollout(self.tasks[pair[0]], pair[1], self.judge),
                    zip(task_id, texts, strict=True),
                )
            )
        rewards: list[float | None] = [
            None if g.error is not None else rubric_reward(g.criteria, self.all_pass_bonus)
            for g in grades
        ]
        for g in grades:
            if g.error is not None:
                log.warning("judge failed on a rollout of task %s: %s", g.task_id, g.error)
        step = int(getattr(trainer_state, "global_step", len(self.series))) + 1
        tokens = sum(len(ids) for ids in completion_ids or [])
        stats = step_stats(step, grades, rewards, self.num_generations, tokens)
        self.series.append(stats)
        if self.series_path is not None and self.write_series:
            self.series_path.parent.mkdir(parents=True, exist_ok=True)
            with self.series_path.open("a", encoding="utf-8") as fh:
                fh.write(stats.model_dump_json() + "\n")
        self.last_grades = grades
        self.last_feedback = [feedback_text(g) for g in grades]
        return rewards

    def metric_series(self) -> dict[str, list[tuple[int, float]]]:
        """``{metric: [(step, value), ...]}`` for MLflow (NaN means dropped)."""
        out: dict[str, list[tuple[int, float]]] = {}
        for stats in self.series:
            for name, value in stats.metrics().items():
                if math.isfinite(value):
                    out.setdefault(f"reward/{name}", []).append((stats.step, value))
        return out
