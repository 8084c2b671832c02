"""Promotion is serialised per registered model, within a process and across promoters.

Inside one promoter the Kafka consumer, the webhook receiver and the reconcile loop all
decide; a ``threading.Lock`` per model orders them. Across promoters sharing the state store
a lease row is taken by compare-and-set (``UPDATE … WHERE holder IS NULL OR expired``): the
row update is atomic on SQLite and PostgreSQL alike, so exactly one holder wins.

A lease expires after ``lease_s`` so a crashed promoter cannot block the model forever, and
a heartbeat thread renews it every ``lease_s / 3`` while it is held, so a decision slowed by
MLflow keeps it. Every acquisition takes the next **generation** of the row (a fencing
token): a holder that stalled past its expiry (a frozen process, a state store it could not
reach) finds another generation in the row and ``fence`` raises ``ModelLeaseLost`` before it
writes the alias. Promoters that do not share a store are caught later by the alias
compare-and-set (``enact.promote``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from registry import db
from uptake.errors import ConflictError

log = logging.getLogger(__name__)


class LockTimeout(ConflictError):
    """Another promoter held the model's lease for longer than we would wait."""


class ModelLeaseLost(ConflictError):
    """Our lease on a model expired or was taken over: whatever we were about to write could
    race the new holder, so nothing is written (retryable: the work is resumed under a new
    lease, against what the new holder left)."""


@dataclass
class Lease:
    """A held lease: the model, the generation we took, and whether the heartbeat lost it."""

    model: str
    generation: int
    lost: threading.Event = field(default_factory=threading.Event)


class ModelLocks:
    def __init__(
        self,
        engine: Engine,
        holder: str,
        lease_s: float,
        timeout_s: float,
        heartbeat_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else lease_s / 3
        self._local: dict[str, threading.Lock] = {}
        self._held: dict[str, Lease] = {}
        self._guard = threading.Lock()

    def _thread_lock(self, model: str) -> threading.Lock:
        with self._guard:
            return self._local.setdefault(model, threading.Lock())

    # -- the lease row -----------------------------------------------------------------------

    def try_acquire(self, model: str) -> int | None:
        """One compare-and-set attempt on the lease row; the generation taken, or None."""
        t = db.leases
        at = db.now()
        with self.engine.begin() as conn:
            won = conn.execute(
                sa.update(t)
                .where(
                    t.c.model == model,
                    sa.or_(t.c.holder.is_(None), t.c.expires_at < at, t.c.holder == self.holder),
                )
                .values(
                    holder=self.holder, expires_at=at + self.lease_s, generation=t.c.generation + 1
                )
            ).rowcount
            if won:
                return int(
                    conn.execute(sa.select(t.c.generation).where(t.c.model == model)).scalar_one()
                )
            exists = conn.execute(sa.select(t.c.model).where(t.c.model == model)).first()
        if exists:
            return None
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t).values(
                        model=model, holder=self.holder, expires_at=at + self.lease_s, generation=1
                    )
                )
            return 1
        except IntegrityError:
            return None  # another promoter created the row first

    def renew(self, model: str, generation: int) -> bool:
        """Extend our lease of ``generation``; False when someone else has taken the row."""
        t = db.leases
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.model == model,
                        t.c.holder == self.holder,
                        t.c.generation == generation,
                    )
                    .values(expires_at=db.now() + self.lease_s)
                ).rowcount
            )

    def release(self, model: str, generation: int | None = None) -> None:
        """Give the lease back (only ours: of ``generation``, when given)."""
        t = db.leases
        mine = sa.and_(t.c.model == model, t.c.holder == self.holder)
        if generation is not None:
            mine = sa.and_(mine, t.c.generation == generation)
        with self.engine.begin() as conn:
            conn.execute(sa.update(t).where(mine).values(holder=None, expires_at=0.0))

    def holder_of(self, model: str) -> str | None:
        t = db.leases
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.holder, t.c.expires_at).where(t.c.model == model)
            ).first()
        if row is None or row.holder is None or row.expires_at < db.now():
            return None
        return row.holder

    # -- fencing -----------------------------------------------------------------------------

    def fence(self, model: str) -> int:
        """Check, right before (and after) a write that must not race, that this thread still
        holds ``model``'s lease: same holder, same generation, and at least a third of
        ``lease_s`` left (the heartbeat renews it every third; less means it is failing).
        Returns the generation; raises ``ModelLeaseLost`` otherwise."""
        lease = self._held.get(model)
        if lease is None:
            raise ModelLeaseLost(f"{model}: the promotion lease is not held here")
        t = db.leases
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.holder, t.c.generation, t.c.expires_at).where(t.c.model == model)
            ).first()
        left = (row.expires_at - db.now()) if row is not None else 0.0
        if (
            lease.lost.is_set()
            or row is None
            or row.holder != self.holder
            or row.generation != lease.generation
            or left < self.lease_s / 3
        ):
            holder = None if row is None else f"{row.holder} (generation {row.generation})"
            raise ModelLeaseLost(
                f"{model}: promotion lease generation {lease.generation} lost "
                f"(row: {holder}, {left:.1f}s left); not writing"
            )
        return lease.generation

    def _heartbeat(self, lease: Lease, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                if not self.renew(lease.model, lease.generation):
                    log.error(
                        "%s: promotion lease generation %d was taken over; the holder will "
                        "not write the alias",
                        lease.model,
                        lease.generation,
                    )
                    lease.lost.set()
                    return
            except Exception as exc:  # the store is unreachable: retry; fence sees expiry
                log.warning("%s: renewing the promotion lease failed: %s", lease.model, exc)

    # -- holding -----------------------------------------------------------------------------

    @contextmanager
    def hold(self, model: str) -> Iterator[Lease]:
        """Hold ``model`` exclusively: this process's threads and other promoters wait. The
        lease is renewed in the background until the block ends."""
        local = self._thread_lock(model)
        if not local.acquire(timeout=self.timeout_s):
            raise LockTimeout(f"timed out waiting for the promotion lock of {model}")
        try:
            deadline = time.monotonic() + self.timeout_s
            delay = 0.05
            while (generation := self.try_acquire(model)) is None:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{model}: promotion lease held by {self.holder_of(model)} for more "
                        f"than {self.timeout_s:.0f}s"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            lease = Lease(model, generation)
            stop = threading.Event()
            beat = threading.Thread(
                target=self._heartbeat, args=(lease, stop), name=f"uptake-lease-{model}"
            )
            beat.daemon = True
            self._held[model] = lease
            beat.start()
            try:
                yield lease
            finally:
                stop.set()
                beat.join()
                del self._held[model]
                self.release(model, lease.generation)
        finally:
            local.release()
