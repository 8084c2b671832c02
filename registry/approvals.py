"""Approvals: a person sets the version tag ``approval`` to ``approved`` or ``rejected``.

That tag, set in the MLflow UI or by ``uptake approve/reject``, is the only input; the
webhook and the reconcile loop merely tell the promoter to look. An approved candidate is
assessed again against the champion of *now*: if another version was promoted meanwhile
and this one no longer beats it, it is rejected and the decision says why.
"""

from __future__ import annotations

import logging
from typing import Literal

from registry.decide import assess, enact, undo_promotion_decision
from registry.decision import Decision
from registry.mlflow_registry import APPROVAL_BY_TAG, APPROVAL_TAG, APPROVAL_VERDICTS, Registry
from registry.promotion import Context, PromotionConflict

log = logging.getLogger(__name__)

Verdict = Literal["approved", "rejected"]
UI_USER = "mlflow-ui"  # MLflow does not record who set a tag; the CLI adds approval.by


def set_approval(registry: Registry, model: str, version: str, verdict: Verdict, by: str) -> None:
    """What ``uptake approve/reject`` does: exactly the UI's tag, plus who set it."""
    registry.set_version_tags(model, version, {APPROVAL_BY_TAG: by})
    registry.set_version_tags(model, version, {APPROVAL_TAG: verdict})


def handle_approval(ctx: Context, model: str, version: str, source: str) -> Decision | None:
    """Act on the ``approval`` tag of a pending candidate; None when there is nothing to do."""
    with ctx.locks.hold(model):
        if ctx.store.candidate_state(model, version) != "pending_approval":
            return None
        mv = ctx.registry.find_version(model, version)
        if mv is None:
            log.warning("%s v%s is pending but no longer exists in MLflow", model, version)
            return None
        tags = mv.tags or {}
        verdict = tags.get(APPROVAL_TAG)
        if verdict not in APPROVAL_VERDICTS:
            return None
        who = f"approval:{tags.get(APPROVAL_BY_TAG) or UI_USER}"
        gate_decision = ctx.store.decision(model, version, "gate")
        release_id = gate_decision.release_id if gate_decision else tags.get("uptake.release_id")
        base = {
            "registered_model": model,
            "version": version,
            "release_id": release_id or "",
            "run_id": mv.run_id,
            "kind": "approval",
            "mode": "manual",
            "decided_by": who,
        }
        log.info("%s v%s: approval=%s (seen via %s)", model, version, verdict, source)
        if verdict == "rejected":
            decision = Decision(
                **base,
                outcome="rejected",
                reason=f"rejected by {who.removeprefix('approval:')}",
                checks=gate_decision.checks if gate_decision else [],
                champion_version=gate_decision.champion_version if gate_decision else None,
                suite_sha=gate_decision.suite_sha if gate_decision else None,
            )
            return enact(ctx, decision, from_state="pending_approval")
        for _ in range(3):
            a = assess(ctx, model, version)
            champion = a.champion.version if a.champion else None
            if a.result.passed:
                outcome, reason = "promoted", f"approved; {a.result.reason}"
            else:
                outcome = "rejected"
                against = f"the current champion v{champion}" if champion else "the gate"
                reason = f"approved, but no longer beats {against}: {a.result.reason}"
            decision = Decision(
                **base,
                outcome=outcome,
                reason=reason,
                checks=a.result.checks,
                champion_version=champion,
                suite_sha=a.candidate.suite_sha,
            )
            try:
                return enact(ctx, decision, from_state="pending_approval")
            except PromotionConflict as exc:
                log.warning("%s", exc)
                undo_promotion_decision(ctx, decision, back_to="pending_approval")
        return None
