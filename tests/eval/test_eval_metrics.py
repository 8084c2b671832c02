"""Metric arithmetic on hand-computed cases, bootstrap behaviour, paired comparison, McNemar."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.eval import EvalResult, compare, compute_metrics, mcnemar_exact
from pipeline.eval.metrics import bootstrap_rates, score_bins
from pipeline.eval.results import CriterionResult, TaskResult
from uptake.errors import InputError


def tr(task_id: str, area: str, verdicts: list[bool]) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        practice_area=area,
        messages=[{"role": "user", "content": f"prompt {task_id}"}],
        response="r",
        criteria=[
            CriterionResult(id=f"c{i}", description="d", type="contains", passed=v, reason="")
            for i, v in enumerate(verdicts)
        ],
    )


def result(tasks: list[TaskResult], model: str = "m", sha: str = "s" * 64) -> EvalResult:
    return EvalResult(
        model=model,
        backend="test",
        suite_name="hand",
        suite_sha256=sha,
        tasks=tasks,
        metrics=compute_metrics(tasks, n_boot=500),
    )


HAND = [
    tr("A", "immigration", [True, True, True]),  # all pass, 3/3
    tr("B", "immigration", [True, False]),  # 1/2
    tr("C", "employment", [False, False, False, False]),  # 0/4
    tr("D", "employment", [True]),  # all pass, 1/1
    tr("E", "landlord-tenant", [True, True, False]),  # 2/3
]


def test_all_pass_vs_criterion_rate_by_hand() -> None:
    m = compute_metrics(HAND)
    assert m.n_tasks == 5 and m.n_criteria == 13
    assert m.n_all_pass == 2 and m.n_criteria_passed == 7
    assert m.all_pass_rate == pytest.approx(2 / 5)
    assert m.criterion_pass_rate == pytest.approx(7 / 13)  # pooled, not the mean task score
    assert m.mean_score == pytest.approx((1 + 0.5 + 0 + 1 + 2 / 3) / 5)


def test_per_area_by_hand() -> None:
    per = compute_metrics(HAND).per_area
    assert sorted(per) == ["employment", "immigration", "landlord-tenant"]
    assert (per["immigration"].all_pass_rate, per["immigration"].criterion_pass_rate) == (
        pytest.approx(1 / 2),
        pytest.approx(4 / 5),
    )
    assert (per["employment"].all_pass_rate, per["employment"].criterion_pass_rate) == (
        pytest.approx(1 / 2),
        pytest.approx(1 / 5),
    )
    assert per["landlord-tenant"].all_pass_rate == 0.0
    assert per["landlord-tenant"].criterion_pass_rate == pytest.approx(2 / 3)
    assert per["employment"].n_tasks == 2 and per["employment"].n_criteria == 5


def test_empty_area_has_no_rate_not_zero() -> None:
    per = compute_metrics(HAND, areas=["contracts", "immigration"]).per_area
    contracts = per["contracts"]
    assert contracts.n_tasks == 0 and contracts.n_criteria == 0
    assert contracts.all_pass_rate is None and contracts.criterion_pass_rate is None
    assert contracts.ci is None
    assert per["immigration"].n_tasks == 2


def test_no_tasks_is_an_error() -> None:
    with pytest.raises(ValueError):
        compute_metrics([])


def test_histogram_and_deciles_by_hand() -> None:
    m = compute_metrics(HAND)
    # scores 1, 0.5, 0, 1, 0.667 -> bins 9, 5, 0, 9, 6
    assert m.score_histogram == [1, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    scores = sorted([1, 0.5, 0, 1, 2 / 3])
    assert m.score_deciles[4] == pytest.approx(2 / 3)  # median
    assert m.score_deciles == pytest.approx(list(np.quantile(scores, np.arange(1, 10) / 10)))


def test_score_bins_edges() -> None:
    # 0.7 and 0.3 are not exact in binary; they must still land in their own bins.
    assert score_bins([0.0, 0.1, 0.3, 0.6, 0.7, 0.99, 1.0]) == [1, 1, 0, 1, 0, 0, 1, 1, 0, 2]
    assert score_bins([3 / 10, 7 / 10, 4 / 5, 2 / 5]) == [0, 0, 0, 1, 1, 0, 0, 1, 1, 0]


def _pattern(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    totals = rng.integers(3, 7, size=n).astype(float)
    passed = np.minimum(totals, rng.integers(0, 8, size=n)).astype(float)
    return passed, totals


def test_bootstrap_covers_point_estimate_and_shrinks_with_n() -> None:
    widths = {}
    for n in (20, 80, 640):
        passed, totals = _pattern(n)
        ci = bootstrap_rates(passed, totals, n_boot=1000, seed=0)
        all_pass = float(np.mean(passed == totals))
        criterion = float(passed.sum() / totals.sum())
        assert ci.all_pass_rate.contains(all_pass)
        assert ci.criterion_pass_rate.contains(criterion)
        widths[n] = (
            ci.all_pass_rate.high - ci.all_pass_rate.low,
            ci.criterion_pass_rate.high - ci.criterion_pass_rate.low,
        )
    for metric in (0, 1):
        assert widths[20][metric] > widths[80][metric] > widths[640][metric] > 0
        # standard error shrinks like 1/sqrt(n): 32x the tasks, roughly 1/5.7 the width
        assert widths[640][metric] < widths[20][metric] / 3


def test_bootstrap_is_seeded() -> None:
    passed, totals = _pattern(50)
    one = bootstrap_rates(passed, totals, seed=3)
    assert one == bootstrap_rates(passed, totals, seed=3)
    assert one != bootstrap_rates(passed, totals, seed=4)


def test_bootstrap_degenerate_rates() -> None:
    ci = compute_metrics([tr("a", "x", [False, True]), tr("b", "x", [False])]).ci
    assert (ci.all_pass_rate.low, ci.all_pass_rate.high) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (2, 10, 158 / 4096),  # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12
        (10, 2, 158 / 4096),
        (0, 5, 2 / 32),
        (1, 6, 0.125),
        (5, 5, 1.0),
        (0, 0, 1.0),
        (0, 1, 1.0),
    ],
)
def test_mcnemar_exact_known_tables(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p)


def test_paired_comparison_by_hand() -> None:
    base = result(
        [
            tr("A", "immigration", [True, False]),
            tr("B", "immigration", [False, False]),
            tr("C", "employment", [True, True]),
            tr("D", "employment", [True, False, False]),
        ],
        model="base",
    )
    cand = result(
        [  # a different order: comparison pairs tasks by id
            tr("D", "employment", [True, True, True]),
            tr("C", "employment", [True, False]),
            tr("B", "immigration", [True, True]),
            tr("A", "immigration", [True, True]),
        ],
        model="cand",
    )
    comp = compare(base, cand, n_boot=1000)
    assert comp.baseline_model == "base" and comp.candidate_model == "cand"
    # all-pass: base {C} = 1/4, candidate {A, B, D} = 3/4
    assert comp.all_pass_rate.baseline == pytest.approx(0.25)
    assert comp.all_pass_rate.candidate == pytest.approx(0.75)
    assert comp.all_pass_rate.diff == pytest.approx(0.5)
    # criteria: base 4/9, candidate 8/9
    assert comp.criterion_pass_rate.diff == pytest.approx(4 / 9)
    assert comp.all_pass_rate.ci.contains(0.5)
    assert comp.criterion_pass_rate.ci.contains(4 / 9)
    assert comp.mcnemar.candidate_only == 3 and comp.mcnemar.baseline_only == 1
    assert comp.mcnemar.p_value == pytest.approx(mcnemar_exact(3, 1))
    assert comp.per_area["immigration"].all_pass_rate.diff == pytest.approx(1.0)
    assert comp.per_area["employment"].all_pass_rate.diff == pytest.approx(0.0)
    # employment criteria: base 3/5, candidate 4/5
    assert comp.per_area["employment"].criterion_pass_rate.diff == pytest.approx(1 / 5)


def test_identical_results_have_zero_difference() -> None:
    comp = compare(result(HAND), result(HAND))
    assert comp.all_pass_rate.diff == 0 and comp.criterion_pass_rate.diff == 0
    assert (comp.all_pass_rate.ci.low, comp.all_pass_rate.ci.high) == (0.0, 0.0)
    assert comp.mcnemar.p_value == 1.0


def test_paired_interval_is_tighter_than_unpaired() -> None:
    rng = np.random.default_rng(7)
    base_tasks, cand_tasks = [], []
    for i in range(200):
        hard = rng.random() < 0.5  # shared difficulty: the point of pairing
        b = [bool(rng.random() < (0.3 if hard else 0.8)) for _ in range(4)]
        c = [v or bool(rng.random() < 0.2) for v in b]
        base_tasks.append(tr(f"t{i}", "x", b))
        cand_tasks.append(tr(f"t{i}", "x", c))
    base, cand = result(base_tasks), result(cand_tasks)
    comp = compare(base, cand)
    paired = comp.criterion_pass_rate.ci.high - comp.criterion_pass_rate.ci.low
    unpaired = np.hypot(
        base.metrics.ci.criterion_pass_rate.high - base.metrics.ci.criterion_pass_rate.low,
        cand.metrics.ci.criterion_pass_rate.high - cand.metrics.ci.criterion_pass_rate.low,
    )
    assert comp.criterion_pass_rate.diff > 0
    assert paired < unpaired / 2


def test_compare_refuses_different_suites_or_tasks() -> None:
    with pytest.raises(InputError, match="different suites"):
        compare(result(HAND, sha="a" * 64), result(HAND, sha="b" * 64))
    with pytest.raises(InputError, match="different tasks"):
        compare(result(HAND), result(HAND[:-1]))
    changed = [*HAND[:-1], tr("E", "landlord-tenant", [True, True])]
    with pytest.raises(InputError, match="different criteria"):
        compare(result(HAND), result(changed))
