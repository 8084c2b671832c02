"""The registry's decisions, each in three steps: gather (evidence), judge (gate), enact.

Two things start a decision: a candidate arriving (``candidate.registered``, or a version
adopted by the reconcile loop) and a person's verdict on a pending one (the version tag
``approval``, set in the MLflow UI or by ``uptake approve/reject``; the webhook and the
reconcile loop merely tell the promoter to look). Both read the case from MLflow at the moment
of deciding, so an approval given hours later is judged against the champion of *now*; a
candidate that no longer beats it is rejected and the decision says why. A promotion that
loses the alias race (``PromotionConflict``) is undone and decided again.

A redelivered candidate finds its decision and only resumes what may be unfinished (an alias
move interrupted by a crash, tags not yet mirrored).

The event itself is not evidence (DESIGN.md "Trust"): it is acted on only for a managed
registered model (``registry.managed``), and only when what it says agrees with MLflow
(``evidence.verified_evidence``); otherwise it is dead-lettered with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from registry import decision as verdicts
from registry import gate
from registry.context import Context
from registry.decision import Decision
from registry.enact import (
    PromotionConflict,
    enact,
    finish_promotion,
    mirror_decision,
    undo_promotion_decision,
)
from registry.evidence import Case, Evidence, gather, verified_evidence
from registry.managed import require_managed
from uptake.events import CandidateRegistered
from uptake.mlflow_contract import (
    APPROVAL_BY_TAG,
    APPROVAL_REJECTED,
    APPROVAL_TAG,
    APPROVAL_VERDICTS,
    RELEASE_ID_TAG,
)

log = logging.getLogger(__name__)

MAX_RACES = 3
UI_USER = "mlflow-ui"  # MLflow does not record who set a tag; the CLI adds approval.by


@dataclass(frozen=True)
class Candidate:
    """What identifies a candidate to decide on (from its event, or from MLflow alone)."""

    model: str
    version: str
    release_id: str
    run_id: str | None = None
    event: CandidateRegistered | None = None  # checked against MLflow, never used as evidence

    @classmethod
    def of(cls, event: CandidateRegistered) -> Candidate:
        return cls(
            event.registered_model, str(event.version), event.release_id, event.run_id, event
        )


def _gather(ctx: Context, model: str, version: str, candidate: Evidence | None = None) -> Case:
    cfg = ctx.gate(model)
    return gather(
        ctx.registry,
        model,
        version,
        with_task_outcomes=cfg.significance is not None,
        candidate=candidate,
    )


def handle_candidate(ctx: Context, event: CandidateRegistered) -> Decision | None:
    """Decide on a registered candidate exactly once; return the (possibly earlier) decision.

    Raises ``UnmanagedModel`` / ``EventMismatch`` / ``UnknownVersion`` (permanent: the bus
    dead-letters the event) when the event is not one uptake may act on.
    """
    require_managed(ctx.settings, event.registered_model)
    return decide_once(ctx, Candidate.of(event))


def decide_once(ctx: Context, cand: Candidate) -> Decision | None:
    with ctx.locks.hold(cand.model):
        logged = verified_evidence(ctx.registry, cand.event) if cand.event is not None else None
        existing = ctx.store.decision(cand.model, cand.version, "gate")
        if existing is not None and resume(ctx, cand.model, cand.version):
            log.info("%s v%s: decided before (duplicate)", cand.model, cand.version)
            ctx.flush()
            return existing
        return decide_candidate(ctx, cand, logged)


def decide_candidate(
    ctx: Context, cand: Candidate, logged: Evidence | None = None
) -> Decision | None:
    """Gather, judge, enact; a lost alias race means all three again. ``logged``: the
    candidate's evidence just read from MLflow (used for the first round only)."""
    model, version = cand.model, cand.version
    for _ in range(MAX_RACES):
        case = _gather(ctx, model, version, logged)
        logged = None  # a lost race reads everything again
        if case.champion is not None and case.champion.version == version:
            log.info("%s v%s is already the champion; nothing to decide", model, version)
            return None
        cfg = ctx.gate(model)
        decision = verdicts.gate_decision(
            model, version, cand.release_id, cand.run_id, cfg.mode, case, gate.judge(case, cfg)
        )
        try:
            return enact(ctx, decision)
        except PromotionConflict as exc:
            log.warning("%s", exc)
            undo_promotion_decision(ctx, decision, back_to=None)
    raise PromotionConflict(f"{model} v{version}: the champion kept moving; try later")


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
        release_id = gate_decision.release_id if gate_decision else tags.get(RELEASE_ID_TAG)
        log.info("%s v%s: %s=%s (seen via %s)", model, version, APPROVAL_TAG, verdict, source)
        if verdict == APPROVAL_REJECTED:
            decision = verdicts.rejected_by_person(
                model, version, release_id or "", mv.run_id, who, gate_decision
            )
            return enact(ctx, decision, from_state="pending_approval")
        for _ in range(MAX_RACES):
            case = _gather(ctx, model, version)
            decision = verdicts.approved_decision(
                model,
                version,
                release_id or "",
                mv.run_id,
                who,
                case,
                gate.judge(case, ctx.gate(model)),
            )
            try:
                return enact(ctx, decision, from_state="pending_approval")
            except PromotionConflict as exc:
                log.warning("%s", exc)
                undo_promotion_decision(ctx, decision, back_to="pending_approval")
        return None


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
