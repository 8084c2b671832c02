"""Transactional outbox: events are stored with the state they announce, then published.

Writing ``promotion.decided`` / ``champion.changed`` in the same transaction as the decision
or history row means a crash can never leave a champion change without its event (or an
event without its change): whatever is unpublished is sent by the next ``flush`` (after each
decision and on every reconcile pass). Delivery is at-least-once, like the rest of the bus.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from registry import db
from uptake.bus import EventProducer
from uptake.events import Event, decode_event

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, engine: Engine, producer: EventProducer | None) -> None:
        self.engine = engine
        self.producer = producer
        self._flushing = threading.Lock()

    @staticmethod
    def add(conn: Connection, event: Event) -> None:
        conn.execute(
            sa.insert(db.outbox).values(event=event.to_json().decode(), created_at=db.now())
        )

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(db.outbox.c.published_at.is_(None))
            ).scalar_one()

    def flush(self) -> int:
        """Publish every unpublished event in order; return how many were sent."""
        if self.producer is None:
            return 0
        sent = 0
        with self._flushing:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(db.outbox.c.id, db.outbox.c.event)
                    .where(db.outbox.c.published_at.is_(None))
                    .order_by(db.outbox.c.id)
                ).all()
            for row in rows:
                self.producer.publish(decode_event(row.event))  # blocks until acknowledged
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(db.outbox)
                        .where(db.outbox.c.id == row.id)
                        .values(published_at=db.now())
                    )
                sent += 1
        if sent:
            log.info("published %d event(s) from the outbox", sent)
        return sent
