"""Step 2 of a decision, judge: the promotion gate (DESIGN.md "Promotion gate"), pure.

``judge`` turns a gathered ``Case`` into checks and a verdict, reading nothing else: every
check is listed with its value, threshold and pass/fail, so a decision explains itself.
Differences are candidate minus comparator, rounded to 1e-9 so that equal scores compare
equal and a margin of 0 means "strictly better".
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from registry.evidence import Case, Evidence, TaskOutcome
from uptake.events import GateCheck
from uptake.formatting import percent, points
from uptake.mlflow_contract import BASELINE_PREFIX, RESULTS_ARTIFACT
from uptake.registry_config import GateConfig
from uptake.stats import PairedTask, discordant, mcnemar_exact, paired_bootstrap


class GateResult(BaseModel):
    passed: bool
    reason: str
    checks: list[GateCheck]


def _diff(a: float, b: float) -> float:
    return round(a - b, 9)


def _better(name: str, cand: float, other: float, margin: float, what: str) -> GateCheck:
    diff = _diff(cand, other)
    return GateCheck(
        name=name,
        passed=diff > margin,
        value=diff,
        threshold=margin,
        detail=f"{cand:.4f} vs {what} {other:.4f} ({points(diff, 2)}, needs > {points(margin, 2)})",
    )


def _champion_checks(cand: Evidence, champ: Evidence, cfg: GateConfig) -> list[GateCheck]:
    assert cand.all_pass_rate is not None and cand.criterion_pass_rate is not None
    if champ.all_pass_rate is None or champ.criterion_pass_rate is None:
        return [
            GateCheck(
                name="champion_scored",
                passed=False,
                detail=f"champion v{champ.version} has no all-pass/criterion metrics",
            )
        ]
    what = f"champion v{champ.version}"
    checks = [
        _better(
            "all_pass_rate_vs_champion",
            cand.all_pass_rate,
            champ.all_pass_rate,
            cfg.all_pass_margin,
            what,
        ),
        _better(
            "criterion_pass_rate_vs_champion",
            cand.criterion_pass_rate,
            champ.criterion_pass_rate,
            cfg.criterion_margin,
            what,
        ),
    ]
    for area in sorted(champ.area_all_pass):
        before = champ.area_all_pass[area]
        after = cand.area_all_pass.get(area)
        if after is None:
            checks.append(
                GateCheck(
                    name=f"area.{area}",
                    passed=False,
                    threshold=-cfg.area_tolerance,
                    detail=f"candidate has no all-pass rate for practice area {area!r}",
                )
            )
            continue
        diff = _diff(after, before)
        checks.append(
            GateCheck(
                name=f"area.{area}",
                passed=diff >= -cfg.area_tolerance,
                value=diff,
                threshold=-cfg.area_tolerance,
                detail=f"{area} all-pass {after:.4f} vs {before:.4f} ({points(diff, 2)}, "
                f"may drop at most {points(cfg.area_tolerance, 2, signed=False)})",
            )
        )
    return checks


def _base_checks(cand: Evidence, cfg: GateConfig) -> list[GateCheck]:
    assert cand.all_pass_rate is not None and cand.criterion_pass_rate is not None
    if cand.base_all_pass_rate is None or cand.base_criterion_pass_rate is None:
        return [
            GateCheck(
                name="base_scored",
                passed=False,
                detail=f"the base model's scores are not logged ({BASELINE_PREFIX}* metrics)",
            )
        ]
    return [
        _better(
            "all_pass_rate_vs_base",
            cand.all_pass_rate,
            cand.base_all_pass_rate,
            cfg.base_margin,
            "base",
        ),
        _better(
            "criterion_pass_rate_vs_base",
            cand.criterion_pass_rate,
            cand.base_criterion_pass_rate,
            cfg.base_margin,
            "base",
        ),
    ]


def pair(
    comparator: Sequence[TaskOutcome], candidate: Sequence[TaskOutcome]
) -> list[PairedTask] | str:
    """Align two result sets task by task, or say why they cannot be paired."""
    a = {t.task_id: t for t in comparator}
    b = {t.task_id: t for t in candidate}
    if set(a) != set(b):
        return f"the result sets cover different tasks ({len(set(a) ^ set(b))} differ)"
    out = []
    for tid in sorted(a):
        if a[tid].n_criteria != b[tid].n_criteria:
            return f"task {tid!r} has different criteria counts"
        out.append(
            PairedTask(
                task_id=tid,
                a_passed=a[tid].n_passed,
                b_passed=b[tid].n_passed,
                n_criteria=a[tid].n_criteria,
            )
        )
    return out


def _significance_check(
    cfg: GateConfig, paired: list[PairedTask] | str | None, against: str
) -> GateCheck:
    sig = cfg.significance
    assert sig is not None
    if paired is None or isinstance(paired, str):
        why = paired or f"per-task results ({RESULTS_ARTIFACT}) are missing"
        return GateCheck(name="significance", passed=False, detail=f"cannot test: {why}")
    if sig.test == "mcnemar":
        cand_only, base_only = discordant(paired)
        p = mcnemar_exact(cand_only, base_only)
        return GateCheck(
            name="significance",
            passed=p < sig.alpha and cand_only > base_only,
            value=p,
            threshold=sig.alpha,
            detail=f"McNemar exact p={p:.4g} vs {against} ({cand_only} tasks all-pass only for "
            f"the candidate, {base_only} only for {against}); needs p < {sig.alpha}",
        )
    all_ci, crit_ci = paired_bootstrap(
        paired, n_boot=sig.bootstrap_samples, seed=sig.seed, confidence=1 - sig.alpha
    )
    low = min(all_ci.low, crit_ci.low)
    return GateCheck(
        name="significance",
        passed=all_ci.low > 0 and crit_ci.low > 0,
        value=low,
        threshold=0.0,
        detail=f"paired bootstrap {percent(1 - sig.alpha, 0)} CI vs {against}: all-pass "
        f"[{all_ci.low:+.4f}, {all_ci.high:+.4f}], criterion [{crit_ci.low:+.4f}, "
        f"{crit_ci.high:+.4f}]; both lower bounds must be > 0",
    )


def evaluate(
    candidate: Evidence,
    champion: Evidence | None,
    cfg: GateConfig,
    paired: list[PairedTask] | str | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``champion`` (None: there is none yet).

    ``paired`` (only used when ``cfg.significance`` is set) are the per-task outcomes of the
    comparator (champion, else base) and the candidate, or why they are unavailable.
    """
    if candidate.all_pass_rate is None or candidate.criterion_pass_rate is None:
        check = GateCheck(
            name="candidate_scored",
            passed=False,
            detail="the candidate's run has no all_pass_rate / criterion_pass_rate metrics",
        )
        return GateResult(
            passed=False, reason=f"rejected: {check.name}: {check.detail}", checks=[check]
        )
    checks: list[GateCheck] = []
    if champion is not None:
        same = bool(candidate.suite_sha) and candidate.suite_sha == champion.suite_sha
        checks.append(
            GateCheck(
                name="same_suite",
                passed=same,
                detail=f"candidate suite {str(candidate.suite_sha)[:12]}, champion "
                f"v{champion.version} suite {str(champion.suite_sha)[:12]}",
            )
        )
        if not same:
            reason = (
                f"rejected: same_suite: suite mismatch: the candidate was scored on suite "
                f"{str(candidate.suite_sha)[:12]} and champion v{champion.version} on "
                f"{str(champion.suite_sha)[:12]}; scores on different suites are never compared "
                "(re-score both on one suite)"
            )
            return GateResult(passed=False, reason=reason, checks=checks)
        checks += _champion_checks(candidate, champion, cfg)
    if cfg.beat_base:
        checks += _base_checks(candidate, cfg)
    if cfg.significance is not None:
        against = f"champion v{champion.version}" if champion is not None else "base"
        checks.append(_significance_check(cfg, paired, against))
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "rejected: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return GateResult(passed=False, reason=reason, checks=checks)
    if champion is not None:
        diffs = {c.name: c.value for c in checks}
        reason = (
            f"beats champion v{champion.version}: all-pass "
            f"{points(diffs['all_pass_rate_vs_champion'] or 0.0, 2)}, criterion "
            f"{points(diffs['criterion_pass_rate_vs_champion'] or 0.0, 2)}"
        )
    elif cfg.beat_base:
        reason = "no champion yet; beats its base model"
    else:
        reason = "no champion yet"
    return GateResult(passed=True, reason=reason, checks=checks)


def judge(case: Case, cfg: GateConfig) -> GateResult:
    """The gate's verdict on a gathered case (per-task outcomes are paired here)."""
    outcomes = case.task_outcomes
    paired: list[PairedTask] | str | None
    if outcomes is None or isinstance(outcomes, str):
        paired = outcomes
    else:
        paired = pair(outcomes.comparator, outcomes.candidate)
    return evaluate(case.candidate, case.champion, cfg, paired)
