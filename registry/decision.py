"""A promotion decision: what was decided about a version, by whom, and every gate check.

The record passes from step 2 (judge) to step 3 (enact): the functions below turn the gate's
verdict into one, pure; ``enact`` stores it in the state store, logs it to the candidate's
MLflow run (``uptake/decision-<kind>.json`` plus run tags) and publishes it as
``promotion.decided``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from registry.evidence import Case
from registry.gate import GateResult
from uptake.events import GateCheck, PromotionDecided
from uptake.mlflow_contract import (
    APPROVAL_APPROVED,
    APPROVAL_REJECTED,
    APPROVAL_TAG,
    DECIDED_BY_TAG,
    DECISION_REASON_TAG,
    DECISION_TAG,
)

Outcome = Literal["promoted", "rejected", "pending_approval"]
Kind = Literal["gate", "approval"]
Mode = Literal["auto", "manual"]


class Decision(BaseModel):
    registered_model: str
    version: str
    release_id: str
    run_id: str | None = None
    kind: Kind = "gate"  # gate: on arrival; approval: after a person approved or rejected
    mode: Mode
    outcome: Outcome
    reason: str
    checks: list[GateCheck] = Field(default_factory=list)
    decided_by: str = "gate"
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    champion_version: str | None = None  # the champion the gate compared against
    suite_sha: str | None = None

    @property
    def artifact_file(self) -> str:
        return f"uptake/decision-{self.kind}.json"

    def run_tags(self) -> dict[str, object]:
        return {
            DECISION_TAG: self.outcome,
            DECISION_REASON_TAG: self.reason,
            DECIDED_BY_TAG: self.decided_by,
        }

    def to_event(self, producer: str) -> PromotionDecided:
        return PromotionDecided(
            producer=producer,
            registered_model=self.registered_model,
            version=self.version,
            release_id=self.release_id,
            outcome=self.outcome,
            reason=self.reason,
            checks=self.checks,
            decided_by=self.decided_by,
        )


def gate_decision(
    model: str,
    version: str,
    release_id: str,
    run_id: str | None,
    mode: Mode,
    case: Case,
    result: GateResult,
) -> Decision:
    """A new candidate's decision: promoted (mode auto), pending_approval (manual), rejected."""
    if not result.passed:
        outcome: Outcome = "rejected"
    elif mode == "auto":
        outcome = "promoted"
    else:
        outcome = "pending_approval"
    reason = result.reason
    if outcome == "pending_approval":
        reason = (
            f"{reason}; waiting for approval "
            f"(tag {APPROVAL_TAG}={APPROVAL_APPROVED} or {APPROVAL_REJECTED})"
        )
    return Decision(
        registered_model=model,
        version=version,
        release_id=release_id,
        run_id=case.candidate.run_id or run_id,
        kind="gate",
        mode=mode,
        outcome=outcome,
        reason=reason,
        checks=result.checks,
        decided_by="gate",
        champion_version=case.champion.version if case.champion else None,
        suite_sha=case.candidate.suite_sha,
    )


def approved_decision(
    model: str,
    version: str,
    release_id: str,
    run_id: str | None,
    who: str,
    case: Case,
    result: GateResult,
) -> Decision:
    """A person approved: promoted if the candidate still beats the champion of now."""
    champion = case.champion.version if case.champion else None
    if result.passed:
        outcome: Outcome = "promoted"
        reason = f"approved; {result.reason}"
    else:
        outcome = "rejected"
        against = f"the current champion v{champion}" if champion else "the gate"
        reason = f"approved, but no longer beats {against}: {result.reason}"
    return Decision(
        **_by_person(model, version, release_id, run_id, who),
        outcome=outcome,
        reason=reason,
        checks=result.checks,
        champion_version=champion,
        suite_sha=case.candidate.suite_sha,
    )


def rejected_by_person(
    model: str,
    version: str,
    release_id: str,
    run_id: str | None,
    who: str,
    gate: Decision | None,
) -> Decision:
    """A person rejected: the gate's checks (if recorded) stay with the decision."""
    return Decision(
        **_by_person(model, version, release_id, run_id, who),
        outcome="rejected",
        reason=f"rejected by {who.removeprefix('approval:')}",
        checks=gate.checks if gate else [],
        champion_version=gate.champion_version if gate else None,
        suite_sha=gate.suite_sha if gate else None,
    )


def _by_person(
    model: str, version: str, release_id: str, run_id: str | None, who: str
) -> dict[str, object]:
    return {
        "registered_model": model,
        "version": version,
        "release_id": release_id,
        "run_id": run_id,
        "kind": "approval",
        "mode": "manual",
        "decided_by": who,
    }
