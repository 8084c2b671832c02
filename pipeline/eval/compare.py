"""Paired comparison of two result sets on the same suite (baseline ``a``, candidate ``b``).

Both models answered the same tasks, so differences are computed per task and resampled
together (paired bootstrap): much tighter than comparing two independent intervals.
McNemar's exact test on the discordant all-pass pairs says whether the all-pass difference
could be chance. Differences are always candidate minus baseline. The statistics are
``uptake.stats``, the ones the promotion gate uses, so the report and the gate agree.
"""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.eval.metrics import DEFAULT_BOOTSTRAP, Interval
from pipeline.eval.results import EvalResult, TaskResult
from uptake.errors import InputError
from uptake.stats import BootstrapInterval, PairedTask, discordant, mcnemar_exact, paired_bootstrap


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


def _paired(a: list[TaskResult], b: list[TaskResult]) -> list[PairedTask]:
    return [
        PairedTask(
            task_id=x.task_id, a_passed=x.n_passed, b_passed=y.n_passed, n_criteria=x.n_criteria
        )
        for x, y in zip(a, b, strict=True)
    ]


def _rates(tasks: list[TaskResult]) -> tuple[float, float]:
    n_all = sum(t.all_pass for t in tasks)
    return n_all / len(tasks), sum(t.n_passed for t in tasks) / sum(t.n_criteria for t in tasks)


def _differences(
    a: list[TaskResult], b: list[TaskResult], n_boot: int, seed: int, confidence: float
) -> tuple[Difference, Difference]:
    """(all-pass, criterion) differences of b over a, paired task by task (same order)."""
    all_ci, crit_ci = paired_bootstrap(
        _paired(a, b), n_boot=n_boot, seed=seed, confidence=confidence
    )
    (all_a, crit_a), (all_b, crit_b) = _rates(a), _rates(b)

    def make(base: float, cand: float, ci: BootstrapInterval) -> Difference:
        return Difference(
            baseline=base, candidate=cand, diff=cand - base, ci=Interval(low=ci.low, high=ci.high)
        )

    return make(all_a, all_b, all_ci), make(crit_a, crit_b, crit_ci)


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
    ta, tb = [ma[i] for i in ids], [mb[i] for i in ids]
    all_diff, crit_diff = _differences(ta, tb, n_boot, seed, confidence)
    per_area = {}
    for area in sorted(set(areas)):
        sa = [t for t, x in zip(ta, areas, strict=True) if x == area]
        sb = [t for t, x in zip(tb, areas, strict=True) if x == area]
        ad, cd = _differences(sa, sb, n_boot, seed, confidence)
        per_area[area] = AreaComparison(n_tasks=len(sa), all_pass_rate=ad, criterion_pass_rate=cd)
    cand_only, base_only = discordant(_paired(ta, tb))
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
