"""Candidate states and decisions in the state store (idempotency lives here).

A decision is recorded once per (model, version, kind): a redelivered ``candidate.registered``
finds its gate decision and does nothing new. A candidate's ``state`` is where its promotion
stands; ``promoting`` means the decision is taken and the alias move may not have finished
(a crash there is resumed, never re-decided).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from registry import db
from registry.decision import Decision

States = ("pending_approval", "promoting", "promoted", "rejected")


class StateStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- candidates --------------------------------------------------------------------------

    def candidate_state(self, model: str, version: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(db.candidates.c.state).where(
                    db.candidates.c.model == model, db.candidates.c.version == version
                )
            ).scalar_one_or_none()

    def candidates_in(self, state: str, model: str | None = None) -> list[tuple[str, str]]:
        query = sa.select(db.candidates.c.model, db.candidates.c.version).where(
            db.candidates.c.state == state
        )
        if model is not None:
            query = query.where(db.candidates.c.model == model)
        with self.engine.connect() as conn:
            return [(r.model, r.version) for r in conn.execute(query)]

    def known_models(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(db.candidates.c.model).distinct()).scalars())

    @staticmethod
    def set_state(
        conn: Connection,
        model: str,
        version: str,
        state: str,
        release_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        if state not in States:
            raise ValueError(f"unknown candidate state {state!r}")
        t = db.candidates
        updated = conn.execute(
            sa.update(t)
            .where(t.c.model == model, t.c.version == version)
            .values(state=state, updated_at=db.now())
        ).rowcount
        if not updated:
            conn.execute(
                sa.insert(t).values(
                    model=model,
                    version=version,
                    state=state,
                    release_id=release_id,
                    run_id=run_id,
                    updated_at=db.now(),
                )
            )

    @staticmethod
    def transition(conn: Connection, model: str, version: str, from_state: str, to: str) -> bool:
        """Compare-and-set of a candidate's state; False when someone else moved it first."""
        t = db.candidates
        return bool(
            conn.execute(
                sa.update(t)
                .where(t.c.model == model, t.c.version == version, t.c.state == from_state)
                .values(state=to, updated_at=db.now())
            ).rowcount
        )

    # -- decisions ---------------------------------------------------------------------------

    def decision(self, model: str, version: str, kind: str = "gate") -> Decision | None:
        t = db.decisions
        with self.engine.connect() as conn:
            body = conn.execute(
                sa.select(t.c.body).where(
                    t.c.model == model, t.c.version == version, t.c.kind == kind
                )
            ).scalar_one_or_none()
        return Decision.model_validate_json(body) if body else None

    def decisions_of(self, model: str) -> list[Decision]:
        t = db.decisions
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.body).where(t.c.model == model).order_by(t.c.id))
            return [Decision.model_validate_json(body) for body in rows.scalars()]

    @staticmethod
    def record_decision(conn: Connection, decision: Decision) -> bool:
        """Insert ``decision``; False if one of its kind already exists for the version.

        Callers hold the model's lease, so check-then-insert does not race; the unique
        constraint is the backstop (its IntegrityError aborts the caller's transaction).
        """
        t = db.decisions
        exists = conn.execute(
            sa.select(t.c.id).where(
                t.c.model == decision.registered_model,
                t.c.version == decision.version,
                t.c.kind == decision.kind,
            )
        ).first()
        if exists:
            return False
        conn.execute(
            sa.insert(t).values(
                model=decision.registered_model,
                version=decision.version,
                kind=decision.kind,
                outcome=decision.outcome,
                reason=decision.reason,
                decided_by=decision.decided_by,
                decided_at=decision.decided_at.timestamp(),
                body=decision.model_dump_json(),
            )
        )
        return True

    @staticmethod
    def forget_decision(conn: Connection, model: str, version: str, kind: str) -> None:
        """Undo a decision whose promotion lost a race, so it is taken again (see promotion)."""
        t = db.decisions
        conn.execute(
            sa.delete(t).where(t.c.model == model, t.c.version == version, t.c.kind == kind)
        )
