"""Rubric metrics with uncertainty, from per-task pass counts.

- criterion pass rate = passed criteria / all criteria (pooled over tasks);
- all-pass rate = tasks whose every criterion passed / tasks;
- task score = share of a task's criteria passed; its histogram (10 bins) and deciles;
- 95% percentile bootstrap intervals resampling *tasks* (criteria of a task are correlated),
  seeded so the same results always give the same intervals.

Both rates also per practice area; an area without tasks has rates ``None``, not 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from pydantic import BaseModel

N_BINS = 10
DEFAULT_BOOTSTRAP = 2000
_CHUNK = 256


class Outcome(Protocol):
    """What metrics need from a task result."""

    @property
    def practice_area(self) -> str: ...

    @property
    def n_passed(self) -> int: ...

    @property
    def n_criteria(self) -> int: ...


class Interval(BaseModel):
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


class RateCI(BaseModel):
    all_pass_rate: Interval
    criterion_pass_rate: Interval


class AreaMetrics(BaseModel):
    n_tasks: int
    n_criteria: int
    all_pass_rate: float | None
    criterion_pass_rate: float | None
    ci: RateCI | None = None


class Metrics(BaseModel):
    all_pass_rate: float
    criterion_pass_rate: float
    n_tasks: int
    n_criteria: int
    n_all_pass: int
    n_criteria_passed: int
    mean_score: float
    ci: RateCI
    per_area: dict[str, AreaMetrics]
    score_histogram: list[int]  # counts in [0,.1), [.1,.2), ..., [.9,1.0]
    score_deciles: list[float]  # 10th..90th percentile of task scores
    confidence: float
    bootstrap_samples: int
    seed: int
    # Tasks scored without their full generation (docs/evaluation.md, "Long prompts"):
    tasks_context_exceeded: int = 0  # the prompt filled the context: every criterion failed
    tasks_generation_truncated: int = 0  # generated only up to the end of the context
    criteria_judge_error: int = 0  # no valid verdict (agentic suites): not passed, not a fail


def score_bins(scores: Iterable[float]) -> list[int]:
    """Ten equal bins; a score on an edge goes up (0.7 is in [0.7, 0.8)), 1.0 in the last."""
    counts = [0] * N_BINS
    for s in scores:
        counts[min(int(np.floor(s * N_BINS + 1e-9)), N_BINS - 1)] += 1
    return counts


def bootstrap_rates(
    passed: np.ndarray,
    totals: np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> RateCI:
    """Percentile intervals for (all-pass, criterion) rates, resampling tasks with replacement."""
    n = len(passed)
    if n == 0:
        raise ValueError("bootstrap needs at least one task")
    rng = np.random.default_rng(seed)
    allp = (passed == totals).astype(float)
    ap = np.empty(n_boot)
    cp = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        ap[start : start + size] = allp[idx].mean(axis=1)
        cp[start : start + size] = passed[idx].sum(axis=1) / totals[idx].sum(axis=1)
    alpha = (1 - confidence) / 2
    return RateCI(
        all_pass_rate=_interval(ap, alpha),
        criterion_pass_rate=_interval(cp, alpha),
    )


def _interval(samples: np.ndarray, alpha: float) -> Interval:
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return Interval(low=float(low), high=float(high))


def _rates(passed: np.ndarray, totals: np.ndarray) -> tuple[float, float]:
    return float(np.mean(passed == totals)), float(passed.sum() / totals.sum())


def compute_metrics(
    outcomes: Sequence[Outcome],
    *,
    areas: Iterable[str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> Metrics:
    """All metrics for one result set; ``areas`` adds areas that may have no tasks."""
    if not outcomes:
        raise ValueError("no task results to compute metrics on")
    if any(o.n_criteria < 1 for o in outcomes):
        raise ValueError("every task needs at least one criterion")
    passed = np.array([o.n_passed for o in outcomes], dtype=float)
    totals = np.array([o.n_criteria for o in outcomes], dtype=float)
    labels = np.array([o.practice_area for o in outcomes])
    all_pass, criterion = _rates(passed, totals)
    scores = passed / totals

    per_area: dict[str, AreaMetrics] = {}
    for area in sorted(set(labels.tolist()) | set(areas or ())):
        sel = labels == area
        if not sel.any():
            per_area[area] = AreaMetrics(
                n_tasks=0, n_criteria=0, all_pass_rate=None, criterion_pass_rate=None
            )
            continue
        a_all, a_crit = _rates(passed[sel], totals[sel])
        per_area[area] = AreaMetrics(
            n_tasks=int(sel.sum()),
            n_criteria=int(totals[sel].sum()),
            all_pass_rate=a_all,
            criterion_pass_rate=a_crit,
            ci=bootstrap_rates(
                passed[sel], totals[sel], n_boot=n_boot, seed=seed, confidence=confidence
            ),
        )
    return Metrics(
        tasks_context_exceeded=sum(
            getattr(o, "failure", None) == "context_exceeded" for o in outcomes
        ),
        tasks_generation_truncated=sum(
            bool(getattr(o, "generation_truncated", False)) for o in outcomes
        ),
        criteria_judge_error=sum(
            sum(bool(getattr(c, "judge_error", False)) for c in getattr(o, "criteria", ()))
            for o in outcomes
        ),
        all_pass_rate=all_pass,
        criterion_pass_rate=criterion,
        n_tasks=len(outcomes),
        n_criteria=int(totals.sum()),
        n_all_pass=int((passed == totals).sum()),
        n_criteria_passed=int(passed.sum()),
        mean_score=float(scores.mean()),
        ci=bootstrap_rates(passed, totals, n_boot=n_boot, seed=seed, confidence=confidence),
        per_area=per_area,
        score_histogram=score_bins(scores.tolist()),
        score_deciles=[float(q) for q in np.quantile(scores, np.arange(1, 10) / 10)],
        confidence=confidence,
        bootstrap_samples=n_boot,
        seed=seed,
    )
