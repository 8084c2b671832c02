"""Promotion is serialised per registered model, within a process and across promoters.

Inside one promoter the Kafka consumer, the webhook receiver and the reconcile loop all
decide; a ``threading.Lock`` per model orders them. Across promoters sharing the state store
a lease row is taken by compare-and-set (``UPDATE … WHERE holder IS NULL OR expired``): the
row update is atomic on SQLite and PostgreSQL alike, so exactly one holder wins. A lease
expires after ``lease_s`` so a crashed promoter cannot block the model forever. Promoters
that do not share a store are caught later by the alias compare-and-set (promotion.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from registry import db
from uptake.errors import UptakeError


class LockTimeout(UptakeError):
    """Another promoter held the model's lease for longer than we would wait."""


class ModelLocks:
    def __init__(self, engine: Engine, holder: str, lease_s: float, timeout_s: float) -> None:
        self.engine = engine
        self.holder = holder
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _thread_lock(self, model: str) -> threading.Lock:
        with self._guard:
            return self._local.setdefault(model, threading.Lock())

    def try_acquire(self, model: str) -> bool:
        """One compare-and-set attempt on the lease row."""
        t = db.leases
        at = db.now()
        with self.engine.begin() as conn:
            won = conn.execute(
                sa.update(t)
                .where(
                    t.c.model == model,
                    sa.or_(t.c.holder.is_(None), t.c.expires_at < at, t.c.holder == self.holder),
                )
                .values(holder=self.holder, expires_at=at + self.lease_s)
            ).rowcount
            if won:
                return True
            exists = conn.execute(sa.select(t.c.model).where(t.c.model == model)).first()
        if exists:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t).values(
                        model=model, holder=self.holder, expires_at=at + self.lease_s
                    )
                )
            return True
        except IntegrityError:
            return False  # another promoter created the row first

    def release(self, model: str) -> None:
        t = db.leases
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.model == model, t.c.holder == self.holder)
                .values(holder=None, expires_at=0.0)
            )

    def holder_of(self, model: str) -> str | None:
        t = db.leases
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.holder, t.c.expires_at).where(t.c.model == model)
            ).first()
        if row is None or row.holder is None or row.expires_at < db.now():
            return None
        return row.holder

    @contextmanager
    def hold(self, model: str) -> Iterator[None]:
        """Hold ``model`` exclusively: this process's threads and other promoters wait."""
        local = self._thread_lock(model)
        if not local.acquire(timeout=self.timeout_s):
            raise LockTimeout(f"timed out waiting for the promotion lock of {model}")
        try:
            deadline = time.monotonic() + self.timeout_s
            delay = 0.05
            while not self.try_acquire(model):
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{model}: promotion lease held by {self.holder_of(model)} for more "
                        f"than {self.timeout_s:.0f}s"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            try:
                yield
            finally:
                self.release(model)
        finally:
            local.release()
