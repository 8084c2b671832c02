"""Paired statistics shared by services that may not import each other's internals.

The promotion gate compares a candidate with the champion on the same tasks; both answered
every task, so the test is paired: McNemar's exact test on discordant all-pass outcomes and
a paired bootstrap of the rate differences (tasks resampled together). Pure Python (math,
random): a few hundred tasks take milliseconds, and no numpy is needed in the registry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from math import comb

from pydantic import BaseModel


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
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def discordant(tasks: Sequence[PairedTask]) -> tuple[int, int]:
    """(tasks all-pass for the candidate only, tasks all-pass for the baseline only)."""
    cand_only = sum(1 for t in tasks if t.b_all and not t.a_all)
    base_only = sum(1 for t in tasks if t.a_all and not t.b_all)
    return cand_only, base_only


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), so numbers match the eval engine's."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def paired_bootstrap(
    tasks: Sequence[PairedTask],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[BootstrapInterval, BootstrapInterval]:
    """Intervals of the all-pass and criterion pass rate differences (candidate - baseline)."""
    if not tasks:
        raise ValueError("no paired tasks")
    n = len(tasks)
    da = [float(t.b_all) - float(t.a_all) for t in tasks]
    dc = [float(t.b_passed - t.a_passed) for t in tasks]
    tot = [float(t.n_criteria) for t in tasks]
    rng = random.Random(seed)
    all_samples: list[float] = []
    crit_samples: list[float] = []
    for _ in range(n_boot):
        idx = [rng.randrange(n) for _ in range(n)]
        all_samples.append(sum(da[i] for i in idx) / n)
        denom = sum(tot[i] for i in idx)
        crit_samples.append(sum(dc[i] for i in idx) / denom if denom else 0.0)
    alpha = (1 - confidence) / 2

    def interval(point: float, samples: list[float]) -> BootstrapInterval:
        samples.sort()
        return BootstrapInterval(
            diff=point, low=_quantile(samples, alpha), high=_quantile(samples, 1 - alpha)
        )

    total = sum(tot)
    return (
        interval(sum(da) / n, all_samples),
        interval(sum(dc) / total if total else 0.0, crit_samples),
    )
