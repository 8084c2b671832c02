"""A promotion decision: what was decided about a version, by whom, and every gate check.

The same object is stored in the state store, logged to the candidate's MLflow run
(``uptake/decision-<kind>.json`` plus run tags) and published as ``promotion.decided``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from uptake.events import GateCheck, PromotionDecided

Outcome = Literal["promoted", "rejected", "pending_approval"]
Kind = Literal["gate", "approval"]


class Decision(BaseModel):
    registered_model: str
    version: str
    release_id: str
    run_id: str | None = None
    kind: Kind = "gate"  # gate: on arrival; approval: after a person approved or rejected
    mode: Literal["auto", "manual"]
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
            "uptake.decision": self.outcome,
            "uptake.decision_reason": self.reason,
            "uptake.decided_by": self.decided_by,
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
