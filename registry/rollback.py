"""``uptake rollback``: put the previous champion back, through the one promotion path.

"Previous" is the champion before the current one: the history's last entry says which
(``previous_version``), with the current champion's ``uptake.previous_champion`` tag as the
fallback when the state store has no history for the model. ``--to VERSION`` picks any
existing version. The gate is not consulted: a rollback is a person's decision, audited as
``rollback:<who>`` and announced as ``champion.changed`` with reason ``rollback``.
"""

from __future__ import annotations

from registry import audit
from registry.audit import HistoryEntry
from registry.context import Context
from registry.enact import promote
from uptake.errors import InputError
from uptake.mlflow_contract import NO_CHAMPION, PREVIOUS_CHAMPION_TAG


def rollback_target(ctx: Context, model: str, current: str) -> str:
    last = audit.last(ctx.store.engine, model)
    if last is not None and last.version == current and last.previous_version:
        return last.previous_version
    tag = (ctx.registry.version(model, current).tags or {}).get(PREVIOUS_CHAMPION_TAG)
    if tag and tag != NO_CHAMPION:
        return tag
    raise InputError(f"{model}: champion v{current} has no previous champion to roll back to")


def rollback(ctx: Context, model: str, to: str | None, by: str, note: str = "") -> HistoryEntry:
    with ctx.locks.hold(model):
        current = ctx.registry.champion(model)
        if current is None:
            raise InputError(f"{model} has no champion; nothing to roll back")
        target = str(to) if to is not None else rollback_target(ctx, model, current)
        if target == current:
            raise InputError(f"{model}: v{target} is already the champion")
        if ctx.registry.find_version(model, target) is None:
            raise InputError(f"{model} has no version {target}")
        detail = f"rollback from v{current} to v{target}" + (f": {note}" if note else "")
        return promote(
            ctx,
            model,
            target,
            expected_champion=current,
            reason="rollback",
            decided_by=f"rollback:{by}",
            detail=detail,
        )
