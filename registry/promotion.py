"""The one promotion path: gate promotions, approved promotions and rollbacks all end here.

Moving ``champion`` is a compare-and-set on the alias: the caller says which champion its
decision was based on; if MLflow shows another one, nothing moves and ``PromotionConflict``
tells the caller to decide again. After the move the alias is re-read, which catches a
promoter that does not share our state store and moved it at the same moment (the lease in
locks.py serialises promoters that do share one). Then, in one transaction: the history
entry, the candidate's final state and the events (outbox); then the MLflow mirror.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from registry import audit
from registry.audit import HistoryEntry
from registry.decision import Decision
from registry.locks import ModelLocks
from registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    Registry,
)
from registry.outbox import Outbox
from registry.store import StateStore
from uptake.errors import UptakeError
from uptake.events import ChampionChanged
from uptake.registry_config import GateConfig
from uptake.settings import Settings

log = logging.getLogger(__name__)

NO_CHAMPION = "none"  # value of uptake.previous_champion when there was none


class PromotionConflict(UptakeError):
    """The champion is not the one the decision was based on: decide again."""


@dataclass
class Context:
    """What every decision path needs; one per promoter process (or CLI command)."""

    settings: Settings
    registry: Registry
    store: StateStore
    locks: ModelLocks
    outbox: Outbox
    producer: str = "uptake-promoter"

    def gate(self, model: str) -> GateConfig:
        return self.settings.registry.gate_for(model)

    def flush(self) -> None:
        """Publish pending events; a broker hiccup is retried by the next reconcile pass."""
        try:
            self.outbox.flush()
        except Exception as exc:
            log.warning("outbox flush failed (%s); the reconcile loop will retry", exc)


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
    current = aliases.get(CHAMPION)
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
        reg.set_version_tags(
            model,
            version,
            {
                PREVIOUS_CHAMPION_TAG: previous or NO_CHAMPION,
                "uptake.promoted_by": decided_by,
                "uptake.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "uptake.promotion_reason": reason,
            },
        )
        reg.set_alias(model, CHAMPION, version)
        now_champion = reg.champion(model)
        if now_champion != version:
            raise PromotionConflict(
                f"{model}: champion moved to v{now_champion} by someone else while promoting "
                f"v{version}"
            )
    if aliases.get(CHALLENGER) == version:
        reg.delete_alias(model, CHALLENGER)
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
        or (mv.tags or {}).get("uptake.release_id"),
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
