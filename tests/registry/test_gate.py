"""The gate, table-driven: each check on its own flips the decision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from registry.evidence import Evidence, TaskOutcome, area_rates, parse_results_jsonl
from registry.gate import evaluate, pair
from uptake.registry_config import GateConfig, RegistrySettings, SignificanceConfig
from uptake.stats import PairedTask, mcnemar_exact, paired_bootstrap

SUITE = "a" * 64


def champ(**kw: Any) -> Evidence:
    base = {
        "registered_model": "m",
        "version": "1",
        "model_uri": "models:/m/1",
        "suite_sha": SUITE,
        "all_pass_rate": 0.50,
        "criterion_pass_rate": 0.80,
        "area_all_pass": {"imm": 0.50, "tax": 0.50},
    }
    return Evidence(**{**base, **kw})


def cand(**kw: Any) -> Evidence:
    base = {
        "registered_model": "m",
        "version": "2",
        "model_uri": "models:/m/2",
        "suite_sha": SUITE,
        "all_pass_rate": 0.60,
        "criterion_pass_rate": 0.85,
        "area_all_pass": {"imm": 0.60, "tax": 0.60},
        "base_all_pass_rate": 0.30,
        "base_criterion_pass_rate": 0.70,
    }
    return Evidence(**{**base, **kw})


# case: (candidate changes, champion changes or None for no champion, gate config, failed checks)
CASES: dict[str, tuple[dict, dict | None, dict, set[str]]] = {
    "beats_champion": ({}, {}, {}, set()),
    "equal_all_pass": ({"all_pass_rate": 0.50}, {}, {}, {"all_pass_rate_vs_champion"}),
    "equal_criterion": (
        {"criterion_pass_rate": 0.80},
        {},
        {},
        {"criterion_pass_rate_vs_champion"},
    ),
    "equal_scores": (
        {"all_pass_rate": 0.50, "criterion_pass_rate": 0.80},
        {},
        {},
        {"all_pass_rate_vs_champion", "criterion_pass_rate_vs_champion"},
    ),
    "better_all_pass_only": (
        {"criterion_pass_rate": 0.75},
        {},
        {},
        {"criterion_pass_rate_vs_champion"},
    ),
    "all_pass_margin": ({}, {}, {"all_pass_margin": 0.2}, {"all_pass_rate_vs_champion"}),
    "criterion_margin": ({}, {}, {"criterion_margin": 0.05}, {"criterion_pass_rate_vs_champion"}),
    "area_regression": ({"area_all_pass": {"imm": 0.9, "tax": 0.40}}, {}, {}, {"area.tax"}),
    "area_drop_within_tolerance": ({"area_all_pass": {"imm": 0.9, "tax": 0.45}}, {}, {}, set()),
    "area_tolerance_zero": (
        {"area_all_pass": {"imm": 0.9, "tax": 0.45}},
        {},
        {"area_tolerance": 0.0},
        {"area.tax"},
    ),
    "area_missing": ({"area_all_pass": {"imm": 0.9}}, {}, {}, {"area.tax"}),
    "loses_to_base": ({"base_criterion_pass_rate": 0.9}, {}, {}, {"criterion_pass_rate_vs_base"}),
    "base_unknown": (
        {"base_all_pass_rate": None, "base_criterion_pass_rate": None},
        {},
        {},
        {"base_scored"},
    ),
    "base_not_required": (
        {"base_all_pass_rate": None, "base_criterion_pass_rate": None},
        {},
        {"beat_base": False},
        set(),
    ),
    "base_margin": ({}, {}, {"base_margin": 0.2}, {"criterion_pass_rate_vs_base"}),
    "suite_mismatch": ({"suite_sha": "b" * 64}, {}, {}, {"same_suite"}),
    "suite_unknown": ({"suite_sha": None}, {}, {}, {"same_suite"}),
    "champion_unscored": ({}, {"all_pass_rate": None}, {}, {"champion_scored"}),
    "no_champion_beats_base": ({}, None, {}, set()),
    "no_champion_equal_to_base": (
        {"all_pass_rate": 0.30},
        None,
        {},
        {"all_pass_rate_vs_base"},
    ),
    "candidate_unscored": ({"criterion_pass_rate": None}, {}, {}, {"candidate_scored"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_check_flips_the_decision(case: str) -> None:
    cand_kw, champ_kw, cfg_kw, failing = CASES[case]
    champion = champ(**champ_kw) if champ_kw is not None else None
    result = evaluate(cand(**cand_kw), champion, GateConfig(**cfg_kw))
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == failing, result.reason
    assert result.passed is (not failing)
    for name in failing:
        assert name in result.reason
    for check in result.checks:  # every check shows its numbers or says why it has none
        assert check.detail


def test_decision_lists_values_and_thresholds() -> None:
    result = evaluate(cand(), champ(), GateConfig(all_pass_margin=0.05))
    checks = {c.name: c for c in result.checks}
    assert checks["all_pass_rate_vs_champion"].value == pytest.approx(0.10)
    assert checks["all_pass_rate_vs_champion"].threshold == 0.05
    assert checks["area.imm"].threshold == -0.05
    assert set(checks) == {
        "same_suite",
        "all_pass_rate_vs_champion",
        "criterion_pass_rate_vs_champion",
        "area.imm",
        "area.tax",
        "all_pass_rate_vs_base",
        "criterion_pass_rate_vs_base",
    }
    assert result.reason.startswith("beats champion v1")


def test_suite_mismatch_is_never_compared() -> None:
    result = evaluate(cand(suite_sha="b" * 64, all_pass_rate=0.99), champ(), GateConfig())
    assert not result.passed
    assert "suite mismatch" in result.reason
    assert [c.name for c in result.checks] == ["same_suite"]  # no cross-suite comparison


def _paired(cand_only: int, base_only: int, same: int = 20) -> list[PairedTask]:
    tasks = [
        PairedTask(task_id=f"c{i}", a_passed=1, b_passed=3, n_criteria=3) for i in range(cand_only)
    ]
    tasks += [
        PairedTask(task_id=f"b{i}", a_passed=3, b_passed=2, n_criteria=3) for i in range(base_only)
    ]
    tasks += [
        PairedTask(task_id=f"s{i}", a_passed=3, b_passed=3, n_criteria=3) for i in range(same)
    ]
    return tasks


@pytest.mark.parametrize(
    ("test", "paired", "passes"),
    [
        ("mcnemar", _paired(12, 1), True),
        ("mcnemar", _paired(3, 2), False),
        ("mcnemar", _paired(1, 12), False),
        ("mcnemar", None, False),
        ("mcnemar", "the result sets cover different tasks", False),
        ("bootstrap", _paired(12, 1), True),
        ("bootstrap", _paired(3, 2), False),
    ],
)
def test_significance_check(test: str, paired, passes: bool) -> None:
    cfg = GateConfig(significance=SignificanceConfig(test=test, bootstrap_samples=500))
    result = evaluate(cand(), champ(), cfg, paired)
    sig = next(c for c in result.checks if c.name == "significance")
    assert sig.passed is passes, sig.detail
    assert result.passed is passes


def test_mcnemar_and_bootstrap_match_known_values() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(6, 2) == pytest.approx(0.2890625)
    all_ci, crit_ci = paired_bootstrap(_paired(12, 1), n_boot=500, seed=1)
    assert all_ci.diff == pytest.approx(11 / 33)
    assert 0 < all_ci.low < all_ci.diff < all_ci.high
    assert paired_bootstrap(_paired(12, 1), n_boot=500, seed=1) == (all_ci, crit_ci)


def test_pairing_needs_the_same_tasks() -> None:
    a = [TaskOutcome(task_id="t1", practice_area="x", n_passed=1, n_criteria=2)]
    b = [TaskOutcome(task_id="t2", practice_area="x", n_passed=2, n_criteria=2)]
    assert isinstance(pair(a, b), str)
    paired = pair(a, [b[0].model_copy(update={"task_id": "t1"})])
    assert paired == [PairedTask(task_id="t1", a_passed=1, b_passed=2, n_criteria=2)]


def test_eval_engine_names_are_read() -> None:
    metrics = {
        "all_pass_rate": 0.5,
        "all_pass_rate.ci_low": 0.4,
        "all_pass_rate.immigration": 0.6,
        "all_pass_rate.immigration.ci_low": 0.5,
        "all_pass_rate.family law": 0.3,
        "criterion_pass_rate.immigration": 0.9,
    }
    assert area_rates(metrics) == {"immigration": 0.6, "family law": 0.3}
    line = {"task_id": "t1", "practice_area": "x", "criteria": [{"passed": True}, {}]}
    rows = parse_results_jsonl(json.dumps(line) + "\n")
    assert rows == [TaskOutcome(task_id="t1", practice_area="x", n_passed=1, n_criteria=2)]
    with pytest.raises(ValueError, match="line 1"):
        parse_results_jsonl('{"task_id": "t1"}\n')


def test_per_model_override_keeps_the_default_gate() -> None:
    section = RegistrySettings.model_validate(
        {"gate": {"area_tolerance": 0.1}, "models": {"strict": {"mode": "manual"}}}
    )
    assert section.gate_for("strict").mode == "manual"
    assert section.gate_for("strict").area_tolerance == 0.1
    assert section.gate_for("other").mode == "auto"


# The base model and a candidate on 20 tasks where two bootstrap implementations disagreed: the
# eval report's paired all-pass interval (numpy generator) started at 0.0, not significant,
# while the gate (Python's random) found a lower bound of +0.05 and promoted.
REPORT_VS_GATE = (
    {"imm": [2, 0, 1, 2, 2, 3, 0, 3, 2, 3], "tax": [3, 3, 1, 0, 1, 1, 2, 1, 1, 2]},
    {"imm": [3, 0, 2, 2, 3, 3, 1, 3, 2, 3], "tax": [3, 2, 2, 0, 1, 3, 3, 0, 3, 3]},
)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_gate_and_eval_report_agree_on_significance(tmp_path, seed: int) -> None:
    from pipeline.eval import compare, save_results
    from registry.evidence import Case, TaskOutcomes
    from registry.gate import judge
    from tests.registry.helpers import eval_result

    base_card, cand_card = REPORT_VS_GATE
    base = eval_result(base_card, "acme/base", SUITE)
    candidate = eval_result(cand_card, "acme/base+uptake", SUITE)
    report = compare(base, candidate, n_boot=2000, seed=seed, confidence=0.95)

    # the gate reads the same tasks back from the results JSONL the eval engine logs
    def outcomes(result, name: str) -> list[TaskOutcome]:
        return parse_results_jsonl(save_results(result, tmp_path / name).read_text())

    case = Case(
        candidate=cand(all_pass_rate=0.9, criterion_pass_rate=0.9),
        champion=None,
        task_outcomes=TaskOutcomes(
            comparator=outcomes(base, "base.jsonl"), candidate=outcomes(candidate, "cand.jsonl")
        ),
    )
    cfg = GateConfig(
        beat_base=False,
        significance=SignificanceConfig(test="bootstrap", alpha=0.05, seed=seed),
    )
    sig = next(c for c in judge(case, cfg).checks if c.name == "significance")
    lows = (report.all_pass_rate.ci.low, report.criterion_pass_rate.ci.low)
    assert sig.value == pytest.approx(min(lows), abs=1e-12)
    assert sig.passed is (min(lows) > 0)
    if seed == 0:
        assert report.all_pass_rate.ci.low <= 0 and not sig.passed
