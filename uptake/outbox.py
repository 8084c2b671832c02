"""The transactional outbox: an event is stored with the state it announces, then published.

A service writes the event into its outbox table in the same transaction as the change it
announces (a release row, a decision, a champion change), so a crash can never leave one
without the other. ``flush`` publishes the pending rows in order and marks each one published
only after the broker acknowledged it; a crash in between leaves it pending and the next flush
sends the very same event (same event id) again, which consumers dedupe. Delivery is
at-least-once, like the rest of the bus.

A broker that is down stops the flush at that row (order is kept; the next flush retries).
A row that can never be published — its payload does not decode, or the broker refuses it as
too large — is marked ``failed`` with its reason, and the rows after it are published: one
bad row never stalls the outbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from kafka.errors import MessageSizeTooLargeError
from sqlalchemy.engine import Connection, Engine

from uptake import db
from uptake.events import Event, decode_event

log = logging.getLogger(__name__)

PENDING, PUBLISHED, FAILED = "pending", "published", "failed"
MAX_ERROR_CHARS = 2000


class Publisher(Protocol):
    def publish(self, event: Event, topic: str | None = None, timeout_s: float = 30.0) -> int: ...


def outbox_columns(
    timestamp: type[sa.types.TypeEngine[Any]] = db.EpochSeconds,
) -> list[sa.Column[Any]]:
    """The columns every outbox table has, next to its own key and ordering columns."""
    return [
        sa.Column("payload", sa.Text, nullable=False),  # the event as JSON
        sa.Column("status", sa.String(16), nullable=False, default=PENDING),  # see PENDING…
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("last_error", sa.Text),
        sa.Column("published_at", timestamp),
    ]


class _Permanent(Exception):
    """This row can never be published; mark it failed and go on with the next."""


class Outbox:
    """Publishes the pending rows of ``table`` (which has :func:`outbox_columns`) in order.

    ``key`` names the column that identifies a row in logs; ``order_by`` the columns that
    give publishing order. Subclasses may override :meth:`published` and
    :meth:`publish_failed` to count what happened.
    """

    def __init__(
        self,
        engine: Engine,
        table: sa.Table,
        producer: Publisher | None,
        *,
        key: str,
        order_by: Sequence[str],
    ) -> None:
        self.engine = engine
        self.table = table
        self.producer = producer
        self.key = table.c[key]
        self.order_by = [table.c[name] for name in order_by]
        self._flushing = threading.Lock()

    def add(self, conn: Connection, event: Event, **columns: Any) -> None:
        """Store ``event`` as pending (call inside the transaction of the change it announces)."""
        conn.execute(
            sa.insert(self.table).values(
                payload=event.to_json().decode(), status=PENDING, attempts=0, **columns
            )
        )

    def pending(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(self.table)
                .where(self.table.c.status == PENDING)
            ).scalar_one()

    def failed(self) -> list[tuple[str, str]]:
        """(key, reason) of every row that was given up on."""
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(self.key, t.c.last_error)
                .where(t.c.status == FAILED)
                .order_by(*self.order_by)
            ).all()
        return [(str(k), str(reason or "")) for k, reason in rows]

    def flush(self) -> int:
        """Publish every pending row in order; return how many were published."""
        if self.producer is None:
            return 0
        sent = 0
        with self._flushing:
            t = self.table
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(t).where(t.c.status == PENDING).order_by(*self.order_by)
                ).all()
            for row in rows:
                values = row._asdict()
                key = values[self.key.name]
                try:
                    event = self._publish(values)
                except _Permanent as exc:
                    self._mark(key, FAILED, last_error=str(exc))
                    log.error("outbox row %s can never be published (%s); marked failed", key, exc)
                    continue
                except Exception as exc:  # broker down or slow: keep the order, retry later
                    error = f"{type(exc).__name__}: {exc}"
                    self._mark(key, PENDING, last_error=error)
                    self.publish_failed(values, error)
                    log.warning("publishing %s failed (%s); it stays pending", key, error)
                    break
                self._mark(key, PUBLISHED, published_at=db.now())
                self.published(values, event)
                sent += 1
        if sent:
            log.info("published %d event(s) from the outbox", sent)
        return sent

    def _publish(self, row: Mapping[str, Any]) -> Event:
        assert self.producer is not None
        try:
            event = decode_event(row["payload"])
        except Exception as exc:  # EventDecodeError, or any failure decoding a stored value
            raise _Permanent(f"payload does not decode: {type(exc).__name__}: {exc}") from exc
        try:
            self.producer.publish(event)  # blocks until the broker acknowledged it
        except MessageSizeTooLargeError as exc:
            raise _Permanent(f"the broker refuses it as too large: {exc}") from exc
        return event

    def _mark(self, key: Any, status: str, **values: Any) -> None:
        t = self.table
        if "last_error" in values:
            # one line: it is shown in `uptake status` and logs
            values["last_error"] = " ".join(str(values["last_error"]).split())[:MAX_ERROR_CHARS]
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(self.key == key)
                .values(status=status, attempts=t.c.attempts + 1, **values)
            )

    # -- hooks ------------------------------------------------------------------------------

    def published(self, row: Mapping[str, Any], event: Event) -> None:
        """Called after ``row`` was published as ``event``."""

    def publish_failed(self, row: Mapping[str, Any], error: str) -> None:
        """Called when publishing ``row`` failed and it stays pending."""
