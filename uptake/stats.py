"""Paired statistics, the one implementation: the eval report and the promotion gate use it.

Both models answered the same tasks, so the comparison is paired: McNemar's exact test on
discordant all-pass outcomes, and a paired bootstrap of the rate differences (tasks
resampled together). The eval engine reports these numbers (``uptake eval --baseline``,
``delta.*`` metrics) and the gate's optional significance check recomputes them from the
per-task results in MLflow; with one implementation and one generator (numpy's
``default_rng(seed)``) the same tasks and seed give the same interval in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import numpy as np
from pydantic import BaseModel

BOOTSTRAP_CHUNK = 256  # resamples drawn at once: bounds memory at CHUNK x n_tasks indices


class PairedTask(BaseModel):
    """One task's outcome for a baseline (``a``) and a candidate (``b``)."""

    task_id: str
    a_passed: int
    b_passed: int
    n_criteria: int

    @property
    def a_all(self) -> bool:
        return self.a_passed == self.n_criteria

    @property
    def b_all(self) -> bool:
        return self.b_passed == self.n_criteria


class BootstrapInterval(BaseModel):
    diff: float  # candidate - baseline
    low: float
    high: float


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial test of min(b, c) among b + c discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail: float = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def discordant(tasks: Sequence[PairedTask]) -> tuple[int, int]:
    """(tasks all-pass for the candidate only, tasks all-pass for the baseline only)."""
    cand_only = sum(1 for t in tasks if t.b_all and not t.a_all)
    base_only = sum(1 for t in tasks if t.a_all and not t.b_all)
    return cand_only, base_only


def paired_bootstrap(
    tasks: Sequence[PairedTask],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[BootstrapInterval, BootstrapInterval]:
    """Percentile intervals of the all-pass and criterion pass rate differences (candidate -
    baseline), resampling tasks with replacement."""
    if not tasks:
        raise ValueError("no paired tasks")
    pa = np.array([t.a_passed for t in tasks], dtype=float)
    pb = np.array([t.b_passed for t in tasks], dtype=float)
    totals = np.array([t.n_criteria for t in tasks], dtype=float)
    ta, tb = (pa == totals).astype(float), (pb == totals).astype(float)
    n = len(tasks)
    rng = np.random.default_rng(seed)
    d_all = np.empty(n_boot)
    d_crit = np.empty(n_boot)
    for start in range(0, n_boot, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        d_all[start : start + size] = tb[idx].mean(axis=1) - ta[idx].mean(axis=1)
        tot = totals[idx].sum(axis=1)
        gained = pb[idx].sum(axis=1) - pa[idx].sum(axis=1)
        d_crit[start : start + size] = np.divide(gained, tot, out=np.zeros(size), where=tot > 0)
    alpha = (1 - confidence) / 2

    def interval(point: float, samples: np.ndarray) -> BootstrapInterval:
        low, high = np.quantile(samples, [alpha, 1 - alpha])
        return BootstrapInterval(diff=point, low=float(low), high=float(high))

    total = float(totals.sum())
    crit_point = float((pb.sum() - pa.sum()) / total) if total else 0.0
    return interval(float(tb.mean() - ta.mean()), d_all), interval(crit_point, d_crit)
