"""Paired comparison of two result sets on the same suite (baseline ``a``, candidate ``b``).

Both models answered the same tasks, so differences are computed per task and resampled
together (paired bootstrap): much tighter than comparing two independent intervals.
McNemar's exact test on the discordant all-pass pairs says whether the all-pass difference
could be chance. Differences are always candidate minus baseline.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from pipeline.eval.metrics import _CHUNK, DEFAULT_BOOTSTRAP, Interval
from pipeline.eval.results import EvalResult
from uptake.errors import InputError
from uptake.stats import mcnemar_exact  # shared with the promotion gate


class Difference(BaseModel):
    baseline: float
    candidate: float
    diff: float  # candidate - baseline
    ci: Interval


class AreaComparison(BaseModel):
    n_tasks: int
    all_pass_rate: Difference
    criterion_pass_rate: Difference


class McNemar(BaseModel):
    candidate_only: int  # tasks all-pass for the candidate only
    baseline_only: int  # tasks all-pass for the baseline only
    p_value: float


class PairedComparison(BaseModel):
    baseline_model: str
    candidate_model: str
    suite_sha256: str
    n_tasks: int
    all_pass_rate: Difference
    criterion_pass_rate: Difference
    mcnemar: McNemar
    per_area: dict[str, AreaComparison]
    confidence: float
    bootstrap_samples: int
    seed: int


def _aligned(a: EvalResult, b: EvalResult) -> tuple[list[str], list[str]]:
    """Task ids in a's order, after checking both answered the same tasks and criteria."""
    if a.suite_sha256 != b.suite_sha256:
        raise InputError(
            f"cannot compare results of different suites ({a.suite_sha256[:12]} vs "
            f"{b.suite_sha256[:12]})"
        )
    ta, tb = a.task_map(), b.task_map()
    if set(ta) != set(tb):
        missing = sorted(set(ta) ^ set(tb))
        raise InputError(f"result sets cover different tasks: {', '.join(missing[:5])}")
    for tid in ta:
        if [c.id for c in ta[tid].criteria] != [c.id for c in tb[tid].criteria]:
            raise InputError(f"task {tid!r} has different criteria in the two result sets")
    ids = [t.task_id for t in a.tasks]
    return ids, [ta[i].practice_area for i in ids]


def _difference(
    pa: np.ndarray,
    pb: np.ndarray,
    totals: np.ndarray,
    rng: np.random.Generator,
    n_boot: int,
    alpha: float,
) -> tuple[Difference, Difference]:
    ta, tb = (pa == totals).astype(float), (pb == totals).astype(float)
    n = len(totals)
    d_all = np.empty(n_boot)
    d_crit = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        d_all[start : start + size] = tb[idx].mean(axis=1) - ta[idx].mean(axis=1)
        tot = totals[idx].sum(axis=1)
        d_crit[start : start + size] = (pb[idx].sum(axis=1) - pa[idx].sum(axis=1)) / tot

    def make(base: float, cand: float, samples: np.ndarray) -> Difference:
        low, high = np.quantile(samples, [alpha, 1 - alpha])
        return Difference(
            baseline=base,
            candidate=cand,
            diff=cand - base,
            ci=Interval(low=float(low), high=float(high)),
        )

    crit_a, crit_b = float(pa.sum() / totals.sum()), float(pb.sum() / totals.sum())
    return make(float(ta.mean()), float(tb.mean()), d_all), make(crit_a, crit_b, d_crit)


def compare(
    a: EvalResult,
    b: EvalResult,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare candidate ``b`` with baseline ``a`` on the same tasks."""
    ids, areas = _aligned(a, b)
    ma, mb = a.task_map(), b.task_map()
    pa = np.array([ma[i].n_passed for i in ids], dtype=float)
    pb = np.array([mb[i].n_passed for i in ids], dtype=float)
    totals = np.array([ma[i].n_criteria for i in ids], dtype=float)
    labels = np.array(areas)
    alpha = (1 - confidence) / 2
    rng = np.random.default_rng(seed)
    all_diff, crit_diff = _difference(pa, pb, totals, rng, n_boot, alpha)
    per_area = {}
    for area in sorted(set(areas)):
        sel = labels == area
        area_rng = np.random.default_rng(seed)
        ad, cd = _difference(pa[sel], pb[sel], totals[sel], area_rng, n_boot, alpha)
        per_area[area] = AreaComparison(
            n_tasks=int(sel.sum()), all_pass_rate=ad, criterion_pass_rate=cd
        )
    a_all, b_all = pa == totals, pb == totals
    cand_only, base_only = int((b_all & ~a_all).sum()), int((a_all & ~b_all).sum())
    return PairedComparison(
        baseline_model=a.model,
        candidate_model=b.model,
        suite_sha256=a.suite_sha256,
        n_tasks=len(ids),
        all_pass_rate=all_diff,
        criterion_pass_rate=crit_diff,
        mcnemar=McNemar(
            candidate_only=cand_only,
            baseline_only=base_only,
            p_value=mcnemar_exact(cand_only, base_only),
        ),
        per_area=per_area,
        confidence=confidence,
        bootstrap_samples=n_boot,
        seed=seed,
    )
