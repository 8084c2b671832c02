"""The registry's outbox: ``promotion.decided`` / ``champion.changed`` stored with their change.

The shared outbox (``uptake.outbox``) over the registry's ``outbox`` table. Writing an event in
the same transaction as the decision or history row means a crash can never leave a champion
change without its event (or an event without its change): whatever is unpublished is sent by
the next ``flush`` (after each decision and on every reconcile pass).
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from registry import db
from uptake.events import Event
from uptake.outbox import Outbox as SharedOutbox
from uptake.outbox import Publisher


class Outbox(SharedOutbox):
    def __init__(self, engine: Engine, producer: Publisher | None) -> None:
        super().__init__(engine, db.outbox, producer, key="id", order_by=("id",))

    def add(self, conn: Connection, event: Event, **columns: object) -> None:
        super().add(conn, event, created_at=db.now(), **columns)
