"""Assess a candidate against the current champion, and carry a decision out.

``assess`` reads everything from MLflow at the moment of deciding (so an approval given
hours later is judged against the champion of *now*). ``enact`` logs the decision to the
candidate's run, records it once, and — when it promotes — goes through ``promote``.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from registry import db, gate
from registry.decision import Decision
from registry.evidence import Evidence
from registry.mlflow_registry import (
    APPROVAL_TAG,
    APPROVAL_VERDICTS,
    CHALLENGER,
    DECISION_REASON_TAG,
    DECISION_TAG,
)
from registry.promotion import Context, promote
from uptake.events import CandidateRegistered

log = logging.getLogger(__name__)


class Assessment(BaseModel):
    candidate: Evidence
    champion: Evidence | None
    result: gate.GateResult


def assess(
    ctx: Context, model: str, version: str, fallback: CandidateRegistered | None = None
) -> Assessment:
    """Gate ``version`` against the champion of now (MLflow is read, not cached).

    ``fallback``: the event's own numbers fill what the run does not have (MLflow wins).
    """
    reg = ctx.registry
    cfg = ctx.gate(model)
    candidate = reg.evidence(model, version)
    if fallback is not None:
        candidate = _fill(candidate, fallback)
    champion_version = reg.champion(model)
    champion = reg.evidence(model, champion_version) if champion_version else None
    paired: list | str | None = None
    if cfg.significance is not None and candidate.run_id:
        paired = _paired(ctx, candidate, champion)
    return Assessment(
        candidate=candidate,
        champion=champion,
        result=gate.evaluate(candidate, champion, cfg, paired),
    )


def _fill(candidate: Evidence, event: CandidateRegistered) -> Evidence:
    given = {
        "suite_sha": event.suite_sha or None,
        "all_pass_rate": event.all_pass_rate,
        "criterion_pass_rate": event.criterion_pass_rate,
        "base_all_pass_rate": event.base_all_pass_rate,
        "base_criterion_pass_rate": event.base_criterion_pass_rate,
        "release_id": event.release_id,
        "run_id": event.run_id,
    }
    missing = {k: v for k, v in given.items() if getattr(candidate, k) is None and v is not None}
    return candidate.model_copy(update=missing) if missing else candidate


def _paired(ctx: Context, candidate: Evidence, champion: Evidence | None) -> list | str:
    reg = ctx.registry
    assert candidate.run_id is not None
    try:
        mine = reg.task_outcomes(candidate.run_id)
        if champion is not None:
            theirs = reg.task_outcomes(champion.run_id) if champion.run_id else None
        else:
            theirs = reg.task_outcomes(candidate.run_id, base=True)
    except ValueError as exc:
        return f"unreadable per-task results: {exc}"
    if mine is None or theirs is None:
        return "per-task results (eval/results.jsonl) are missing"
    return gate.pair(theirs, mine)


def enact(ctx: Context, decision: Decision, *, from_state: str | None = None) -> Decision | None:
    """Record ``decision`` once and carry it out; None if it was already taken.

    ``from_state``: the candidate state the decision requires (compare-and-set), e.g. an
    approval acts only on a candidate still ``pending_approval``. The state store is written
    before the MLflow tags, so whoever sees ``approval=pending`` or ``uptake.decision`` in
    MLflow finds the decision recorded; a crash in between is repaired by ``mirror_decision``
    when the event is redelivered.
    """
    model, version = decision.registered_model, decision.version
    if decision.run_id:
        ctx.registry.log_json(
            decision.run_id, decision.model_dump(mode="json"), decision.artifact_file
        )
        ctx.registry.set_run_tags(decision.run_id, decision.run_tags())
    state = "promoting" if decision.outcome == "promoted" else decision.outcome
    with ctx.store.engine.begin() as conn:
        if from_state is not None and not ctx.store.transition(
            conn, model, version, from_state, state
        ):
            log.info("%s v%s is no longer %s; nothing to do", model, version, from_state)
            return None
        if not ctx.store.record_decision(conn, decision):
            log.info("%s v%s already has a %s decision", model, version, decision.kind)
            return None
        if from_state is None:
            ctx.store.set_state(
                conn, model, version, state, release_id=decision.release_id, run_id=decision.run_id
            )
        if decision.outcome != "promoted":
            ctx.outbox.add(conn, decision.to_event(ctx.producer))
    if decision.outcome == "promoted":
        finish_promotion(ctx, decision)
    else:
        mirror_decision(ctx, decision)
        ctx.flush()
    log.info("%s v%s: %s (%s)", model, version, decision.outcome, decision.reason)
    return decision


def mirror_decision(ctx: Context, decision: Decision, *, keep_verdict: bool = False) -> None:
    """The MLflow side of a pending or rejected decision: challenger alias, then tags
    (``approval=pending`` last: it is what people and the UI act on). Idempotent.

    ``keep_verdict`` (repairs after a redelivery): an ``approval`` a person has already set
    to approved or rejected is left alone — writing ``pending`` over it would lose it.
    """
    model, version = decision.registered_model, decision.version
    reg = ctx.registry
    if decision.outcome == "pending_approval":
        reg.set_alias(model, CHALLENGER, version)
    elif decision.outcome == "rejected" and reg.aliases(model).get(CHALLENGER) == version:
        reg.delete_alias(model, CHALLENGER)
    tags: dict[str, object] = {DECISION_TAG: decision.outcome, DECISION_REASON_TAG: decision.reason}
    if decision.outcome == "pending_approval":
        verdict = reg.version(model, version).tags.get(APPROVAL_TAG) if keep_verdict else None
        if verdict not in APPROVAL_VERDICTS:
            tags[APPROVAL_TAG] = "pending"
    reg.set_version_tags(model, version, tags)


def finish_promotion(ctx: Context, decision: Decision) -> None:
    """Move the alias for a recorded ``promoted`` decision (also used to resume one)."""
    promote(
        ctx,
        decision.registered_model,
        decision.version,
        expected_champion=decision.champion_version,
        reason="promotion",
        decided_by=decision.decided_by,
        detail=decision.reason,
        decision=decision,
    )
    ctx.registry.set_version_tags(
        decision.registered_model,
        decision.version,
        {DECISION_TAG: "promoted", DECISION_REASON_TAG: decision.reason},
    )


def undo_promotion_decision(ctx: Context, decision: Decision, back_to: str | None) -> None:
    """A promotion lost the alias race: forget the decision so that it is taken again."""
    with ctx.store.engine.begin() as conn:
        ctx.store.forget_decision(conn, decision.registered_model, decision.version, decision.kind)
        if back_to is None:
            conn.execute(
                db.candidates.delete().where(
                    db.candidates.c.model == decision.registered_model,
                    db.candidates.c.version == decision.version,
                )
            )
        else:
            ctx.store.set_state(conn, decision.registered_model, decision.version, back_to)
