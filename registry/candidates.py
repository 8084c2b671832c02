"""``candidate.registered`` → one gate decision (idempotent on model + version).

A redelivered event finds its decision and only resumes what may be unfinished (an alias
move interrupted by a crash, unpublished events). A new one is assessed against the champion
of now; the gate's verdict becomes ``promoted`` (mode auto), ``pending_approval`` (manual) or
``rejected``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from registry.decide import (
    assess,
    enact,
    finish_promotion,
    mirror_decision,
    undo_promotion_decision,
)
from registry.decision import Decision
from registry.promotion import Context, PromotionConflict
from uptake.events import CandidateRegistered

log = logging.getLogger(__name__)

MAX_RACES = 3


@dataclass(frozen=True)
class Candidate:
    """What identifies a candidate to decide on (from its event, or from MLflow alone)."""

    model: str
    version: str
    release_id: str
    run_id: str | None = None
    event: CandidateRegistered | None = None  # its numbers fill what the run lacks

    @classmethod
    def of(cls, event: CandidateRegistered) -> Candidate:
        return cls(
            event.registered_model, str(event.version), event.release_id, event.run_id, event
        )


def handle_candidate(ctx: Context, event: CandidateRegistered) -> Decision | None:
    """Decide on a registered candidate exactly once; return the (possibly earlier) decision."""
    return decide_once(ctx, Candidate.of(event))


def decide_once(ctx: Context, cand: Candidate) -> Decision | None:
    with ctx.locks.hold(cand.model):
        existing = ctx.store.decision(cand.model, cand.version, "gate")
        if existing is not None and resume(ctx, cand.model, cand.version):
            log.info("%s v%s: decided before (duplicate)", cand.model, cand.version)
            ctx.flush()
            return existing
        return decide_and_enact(ctx, cand)


def decide_and_enact(ctx: Context, cand: Candidate) -> Decision | None:
    """Assess and carry out; a lost alias race (PromotionConflict) means assess again."""
    for _ in range(MAX_RACES):
        decision = decide_candidate(ctx, cand)
        if decision is None:
            return None
        try:
            return enact(ctx, decision)
        except PromotionConflict as exc:
            log.warning("%s", exc)
            undo_promotion_decision(ctx, decision, back_to=None)
    raise PromotionConflict(f"{cand.model} v{cand.version}: the champion kept moving; try later")


def decide_candidate(ctx: Context, cand: Candidate) -> Decision | None:
    model, version = cand.model, cand.version
    a = assess(ctx, model, version, fallback=cand.event)
    if a.champion is not None and a.champion.version == version:
        log.info("%s v%s is already the champion; nothing to decide", model, version)
        return None
    cfg = ctx.gate(model)
    if not a.result.passed:
        outcome = "rejected"
    elif cfg.mode == "auto":
        outcome = "promoted"
    else:
        outcome = "pending_approval"
    reason = a.result.reason
    if outcome == "pending_approval":
        reason = f"{reason}; waiting for approval (tag approval=approved or rejected)"
    return Decision(
        registered_model=model,
        version=version,
        release_id=cand.release_id,
        run_id=a.candidate.run_id or cand.run_id,
        kind="gate",
        mode=cfg.mode,
        outcome=outcome,
        reason=reason,
        checks=a.result.checks,
        decided_by="gate",
        champion_version=a.champion.version if a.champion else None,
        suite_sha=a.candidate.suite_sha,
    )


def resume(ctx: Context, model: str, version: str) -> bool:
    """Finish a recorded promotion whose alias move may not have happened (crash).

    Returns False when the decision had to be undone (the champion moved meanwhile): the
    caller decides again.
    """
    state = ctx.store.candidate_state(model, version)
    if state in ("pending_approval", "rejected"):
        decision = ctx.store.decision(model, version, "gate")
        if decision is not None and decision.outcome == state:
            # the tags may not have been written (crash); a verdict set since is kept
            mirror_decision(ctx, decision, keep_verdict=True)
        return True
    if state != "promoting":
        return True
    for kind in ("approval", "gate"):
        decision = ctx.store.decision(model, version, kind)
        if decision is None or decision.outcome != "promoted":
            continue
        log.info("%s v%s: resuming an interrupted promotion", model, version)
        try:
            finish_promotion(ctx, decision)
            return True
        except PromotionConflict as exc:
            log.warning("%s", exc)
            back_to = "pending_approval" if kind == "approval" else None
            undo_promotion_decision(ctx, decision, back_to=back_to)
            # approvals are re-decided by the reconcile loop; a gate decision by the
            # redelivered candidate.registered (its offset was not committed)
            return kind == "approval"
    return True
