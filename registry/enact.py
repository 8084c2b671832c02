"""Step 3 of a decision, enact: record it once, carry it out, mirror it to MLflow.

``enact`` logs a decision to the candidate's run, records it in the state store (compare-and-
set, so it is taken once) and then either moves ``champion`` through ``promote`` or mirrors a
pending / rejected decision to MLflow tags and the ``challenger`` alias.

``promote`` is the one path that moves ``champion``: gate promotions, approved promotions and
rollbacks all end there. The move is a compare-and-set on the alias: the caller says which
champion its decision was based on; if MLflow shows another one, nothing moves and
``PromotionConflict`` tells the caller to decide again. After the move the alias is re-read,
which catches a promoter that does not share our state store and moved it at the same moment
(the lease in locks.py serialises promoters that do share one). Right before and right after
the alias write the lease is fenced (``ModelLocks.fence``): a holder whose lease lapsed or was
taken over writes nothing, and one that lost it during the write stops before recording
anything, so the next holder resumes or undoes the promotion against what it finds. Then,
in one transaction: the history entry, the candidate's final state and the events (outbox);
then the MLflow mirror.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from registry import audit, db
from registry.audit import HistoryEntry
from registry.context import Context
from registry.decision import Decision
from uptake.errors import ConflictError
from uptake.events import ChampionChanged
from uptake.mlflow_contract import (
    APPROVAL_PENDING,
    APPROVAL_TAG,
    APPROVAL_VERDICTS,
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    DECISION_REASON_TAG,
    DECISION_TAG,
    NO_CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    PROMOTION_REASON_TAG,
    RELEASE_ID_TAG,
)

log = logging.getLogger(__name__)


class PromotionConflict(ConflictError):
    """The champion is not the one the decision was based on: decide again."""


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
        reg.set_alias(model, CHALLENGER_ALIAS, version)
    elif decision.outcome == "rejected" and reg.aliases(model).get(CHALLENGER_ALIAS) == version:
        reg.delete_alias(model, CHALLENGER_ALIAS)
    tags: dict[str, object] = {DECISION_TAG: decision.outcome, DECISION_REASON_TAG: decision.reason}
    if decision.outcome == "pending_approval":
        verdict = reg.version(model, version).tags.get(APPROVAL_TAG) if keep_verdict else None
        if verdict not in APPROVAL_VERDICTS:
            tags[APPROVAL_TAG] = APPROVAL_PENDING
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


def promote(
    ctx: Context,
    model: str,
    version: str,
    *,
    expected_champion: str | None,
    reason: str,
    decided_by: str,
    detail: str,
    decision: Decision | None = None,
) -> HistoryEntry:
    """Make ``version`` the champion of ``model``; the caller holds the model's lock."""
    reg = ctx.registry
    aliases = reg.aliases(model)
    current = aliases.get(CHAMPION_ALIAS)
    if current == version and decision is not None:
        # resuming a promotion that moved the alias and then crashed: the tag set before
        # the move says what the champion was
        tag = reg.version(model, version).tags.get(PREVIOUS_CHAMPION_TAG)
        previous = None if tag in (None, NO_CHAMPION) else tag
    elif current != expected_champion:
        raise PromotionConflict(
            f"{model}: champion is v{current} but the decision was based on "
            f"v{expected_champion}; deciding again"
        )
    else:
        previous = current
        ctx.locks.fence(model)  # a holder whose lease lapsed writes nothing, not even tags
        reg.set_version_tags(
            model,
            version,
            {
                PREVIOUS_CHAMPION_TAG: previous or NO_CHAMPION,
                PROMOTED_BY_TAG: decided_by,
                PROMOTED_AT_TAG: datetime.now(UTC).isoformat(timespec="seconds"),
                PROMOTION_REASON_TAG: reason,
            },
        )
        ctx.locks.fence(model)  # and once more right before the write that matters
        reg.set_alias(model, CHAMPION_ALIAS, version)
        ctx.locks.fence(model)  # lost while writing: leave it `promoting` for the next holder
        now_champion = reg.champion(model)
        if now_champion != version:
            raise PromotionConflict(
                f"{model}: champion moved to v{now_champion} by someone else while promoting "
                f"v{version}"
            )
    if aliases.get(CHALLENGER_ALIAS) == version:
        reg.delete_alias(model, CHALLENGER_ALIAS)
    return record_change(
        ctx,
        model,
        version,
        previous,
        reason="rollback" if reason == "rollback" else "promotion",
        decided_by=decided_by,
        detail=detail,
        decision=decision,
    )


def record_change(
    ctx: Context,
    model: str,
    version: str,
    previous: str | None,
    *,
    reason: Literal["promotion", "rollback"],
    decided_by: str,
    detail: str,
    decision: Decision | None = None,
) -> HistoryEntry:
    """The alias has moved to ``version``: append the history entry, queue ``champion.changed``
    (and the decision's event) in one transaction, then mirror the entry to MLflow."""
    reg = ctx.registry
    mv = reg.version(model, version)
    entry = HistoryEntry(
        registered_model=model,
        version=version,
        previous_version=previous,
        reason=reason,
        decided_by=decided_by,
        model_uri=f"models:/{model}/{version}",
        release_id=(decision.release_id if decision else None)
        or (mv.tags or {}).get(RELEASE_ID_TAG),
        detail=detail,
        checks=decision.checks if decision else [],
    )
    changed = ChampionChanged(
        producer=ctx.producer,
        registered_model=model,
        version=version,
        previous_version=previous,
        model_uri=entry.model_uri,
        reason=entry.reason,
    )
    with ctx.store.engine.begin() as conn:
        entry = audit.append(conn, entry)
        if decision is not None:
            ctx.store.set_state(conn, model, version, "promoted")
            ctx.outbox.add(conn, decision.to_event(ctx.producer))
        ctx.outbox.add(conn, changed)
    log.info(
        "%s: champion v%s -> v%s (%s by %s)", model, previous, version, entry.reason, decided_by
    )
    try:
        audit.mirror_to_mlflow(reg, entry)
    except Exception as exc:  # the store has it; reconcile re-mirrors
        log.warning("mirroring history #%d of %s to MLflow failed: %s", entry.seq, model, exc)
    ctx.flush()
    return entry
