"""The audit trail: an append-only history of champion changes, mirrored to MLflow.

MLflow keeps only the current alias, not who moved it, when, or why. Each change is a row
in the state store and, as a mirror readable from the MLflow UI, a registered-model tag
``uptake.history.NNNN`` (compact JSON) plus version tags on the new champion.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection, Engine

from registry import db
from registry.mlflow_registry import Registry
from uptake.events import GateCheck
from uptake.mlflow_contract import HISTORY_TAG_PREFIX


class HistoryEntry(BaseModel):
    registered_model: str
    seq: int = 0  # assigned on append: 1, 2, … per model
    version: str
    previous_version: str | None = None
    reason: Literal["promotion", "rollback"] = "promotion"
    decided_by: str  # "gate", "approval:<who>", "rollback:<who>"
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    model_uri: str
    release_id: str | None = None
    detail: str = ""  # the decision's reason
    checks: list[GateCheck] = Field(default_factory=list)

    def mirror(self) -> dict[str, object]:
        """The compact form stored in the MLflow tag (values that matter, under 5000 chars)."""
        return {
            "v": self.version,
            "prev": self.previous_version,
            "reason": self.reason,
            "by": self.decided_by,
            "at": self.decided_at.isoformat(timespec="seconds"),
            "why": self.detail[:300],
            "checks": {c.name: [c.passed, c.value] for c in self.checks[:30]},
        }


def append(conn: Connection, entry: HistoryEntry) -> HistoryEntry:
    """Add ``entry`` as the model's next change (call inside the promotion transaction)."""
    t = db.history
    last = conn.execute(
        sa.select(sa.func.max(t.c.seq)).where(t.c.model == entry.registered_model)
    ).scalar_one_or_none()
    entry = entry.model_copy(update={"seq": (last or 0) + 1})
    conn.execute(
        sa.insert(t).values(
            model=entry.registered_model,
            seq=entry.seq,
            version=entry.version,
            previous_version=entry.previous_version,
            reason=entry.reason,
            decided_by=entry.decided_by,
            decided_at=entry.decided_at.timestamp(),
            body=entry.model_dump_json(),
        )
    )
    return entry


def read(engine: Engine, model: str) -> list[HistoryEntry]:
    t = db.history
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.body).where(t.c.model == model).order_by(t.c.seq))
        return [HistoryEntry.model_validate_json(body) for body in rows.scalars()]


def last(engine: Engine, model: str) -> HistoryEntry | None:
    entries = read(engine, model)
    return entries[-1] if entries else None


def mirror_to_mlflow(registry: Registry, entry: HistoryEntry) -> None:
    registry.set_model_tag(
        entry.registered_model, f"{HISTORY_TAG_PREFIX}{entry.seq:04d}", entry.mirror()
    )


def read_mirror(registry: Registry, model: str) -> list[dict[str, object]]:
    """The history as mirrored in MLflow tags (e.g. from a machine without the state store)."""
    out = []
    for key, value in sorted(registry.model_tags(model).items()):
        if key.startswith(HISTORY_TAG_PREFIX):
            try:
                item = json.loads(value)
            except json.JSONDecodeError:
                continue
            item["seq"] = int(key[len(HISTORY_TAG_PREFIX) :])
            out.append(item)
    return out
