"""A lease per job key, held as tags of the key's MLflow run (workers share only MLflow).

A rebalance hands a busy worker's partition to another member, which then receives the same
release while the first still trains it. The lease keeps the second from training it too:
owner, expiry and a fencing generation live on the run (``uptake.lease.*``). A worker takes the
lease when nobody holds it, when it has expired, or when it is its own (a restarted worker of
the same static identity); it then renews it from a heartbeat thread every ``heartbeat_s``.

MLflow has no compare-and-set, so taking is write-then-verify: write owner and the next
generation, wait ``settle_s``, read back; only a worker that still finds its own generation
holds the lease. Two takers whose read and write are more than ``settle_s`` apart could both
win; registration is idempotent on the key (``register.py``) as the last line, so even then a
key gets one version. The heartbeat checks the tags each beat: a holder that finds another
generation has lost the lease, and ``fence`` raises ``JobLeaseLost`` before its next stage.

A lease is lost only when another holder's generation is seen. While MLflow is unreachable
nobody can take the lease either (takers read and write the same tags), so the holder keeps
its lease and its work, and the heartbeat re-checks once MLflow answers: still its own
generation, it renews; another one, the lease is lost. Counting the failed renewals against
``ttl_s`` instead dropped the job of a worker that nobody had replaced (issue 19).

The lease reads and writes through a ``LeaseStore`` (``MlflowLeaseStore`` on a run's tags);
pure tests hand in an in-memory one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.worker.tags import LEASE_EXPIRES_TAG, LEASE_GENERATION_TAG, LEASE_OWNER_TAG
from uptake.errors import ConflictError

log = logging.getLogger(__name__)


class JobLeaseLost(ConflictError):
    """Another worker took this key over: stop before writing anything more (retryable: the
    event comes back and the job resumes under whoever holds the lease then)."""


@dataclass(frozen=True)
class LeaseState:
    owner: str | None
    expires_at: float
    generation: int

    def live(self, now: float | None = None) -> bool:
        return self.owner is not None and self.expires_at > (now or time.time())


class LeaseStore(Protocol):
    """Where the lease of a run lives: ``read`` the holder, ``write`` owner/expiry/generation."""

    def read(self, run_id: str) -> LeaseState: ...

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None: ...


def lease_of_tags(tags: dict[str, str]) -> LeaseState:
    """The lease a run's tags record (no lease when a tag was hand-edited into nonsense)."""
    try:
        expires = float(tags.get(LEASE_EXPIRES_TAG, "0"))
        generation = int(tags.get(LEASE_GENERATION_TAG, "0"))
    except ValueError:  # a hand-edited tag: treat as no lease
        expires, generation = 0.0, 0
    return LeaseState(tags.get(LEASE_OWNER_TAG) or None, expires, generation)


class MlflowLeaseStore:
    """The lease as ``uptake.lease.*`` tags of the run, through an ``MlflowClient``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def read(self, run_id: str) -> LeaseState:
        return lease_of_tags(self.client.get_run(run_id).data.tags)

    def write(self, run_id: str, owner: str, expires: float, generation: int) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            run_id,
            tags=[
                RunTag(LEASE_OWNER_TAG, owner),
                RunTag(LEASE_EXPIRES_TAG, f"{expires:.3f}"),
                RunTag(LEASE_GENERATION_TAG, str(generation)),
            ],
        )


def read_lease(client: Any, run_id: str) -> LeaseState:
    """The lease on ``run_id`` as MLflow holds it."""
    return MlflowLeaseStore(client).read(run_id)


class Lease:
    """The lease on one run: ``try_acquire``, then ``start`` the heartbeat, ``fence`` before
    each stage, ``release`` at the end."""

    def __init__(
        self,
        store: LeaseStore,
        run_id: str,
        owner: str,
        ttl_s: float,
        heartbeat_s: float,
        settle_s: float = 0.5,
    ) -> None:
        self.store, self.run_id, self.owner = store, run_id, owner
        self.ttl_s, self.heartbeat_s, self.settle_s = ttl_s, min(heartbeat_s, ttl_s / 3), settle_s
        self.generation: int | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_at = 0.0  # monotonic time the heartbeat last found the lease ours

    def try_acquire(self, known: LeaseState | None = None) -> LeaseState | None:
        """Take the lease if it is free, expired or ours; None when taken, else the holder.
        ``known``: the lease as just read with the run (saves a read; the verify after the
        write reads anyway)."""
        state = known if known is not None else self.store.read(self.run_id)
        if state.live() and state.owner != self.owner:
            return state
        generation = state.generation + 1
        self.store.write(self.run_id, self.owner, time.time() + self.ttl_s, generation)
        time.sleep(self.settle_s)
        after = self.store.read(self.run_id)
        if after.owner == self.owner and after.generation == generation:
            self.generation = generation
            self._seen_at = time.monotonic()
            return None
        return after

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="uptake-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        failing_since: float | None = None
        while not self._stop.wait(self.heartbeat_s):
            try:
                state = self.store.read(self.run_id)
            except Exception as exc:  # MLflow unreachable: nobody can take it; look again
                failing_since = failing_since or time.monotonic()
                log.warning(
                    "lease on run %s not checked for %.0f s (MLflow unreachable): %s; keeping it",
                    self.run_id,
                    time.monotonic() - failing_since,
                    exc,
                )
                continue
            if state.owner != self.owner or state.generation != self.generation:
                log.error(
                    "lease on run %s taken over by %s (generation %d, ours %s)",
                    self.run_id,
                    state.owner,
                    state.generation,
                    self.generation,
                )
                self.lost.set()
                return
            self._seen_at = time.monotonic()
            if failing_since is not None:
                log.info("MLflow answers again; lease on run %s still ours", self.run_id)
                failing_since = None
            try:
                self.store.write(
                    self.run_id, self.owner, time.time() + self.ttl_s, state.generation
                )
            except Exception as exc:  # checked again next beat
                log.warning("renewing the lease on run %s failed: %s", self.run_id, exc)

    def fence(self, fresh: bool = True) -> None:
        """Raise ``JobLeaseLost`` unless we still hold the lease. ``fresh``: read it from
        MLflow now (before the write that must happen once: registration); otherwise the
        heartbeat's check counts when it is at most two beats old (a stage start needs no
        request of its own)."""
        if self.generation is None:
            raise JobLeaseLost(f"lease on run {self.run_id} not held")
        recent = time.monotonic() - self._seen_at <= 2 * self.heartbeat_s
        if not fresh and recent and not self.lost.is_set():
            return
        state = self.store.read(self.run_id)
        if self.lost.is_set() or state.owner != self.owner or state.generation != self.generation:
            raise JobLeaseLost(
                f"lease on run {self.run_id} lost to {state.owner} (generation "
                f"{state.generation}, ours {self.generation}); not writing"
            )

    def stop(self) -> None:
        """Stop the heartbeat (no renewal can follow a write that frees the lease)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)

    def freed_tags(self) -> dict[str, str]:
        """The tags that free the lease, for a caller's own last write (the heartbeat stopped
        and the lease fenced just before); ``release`` then writes nothing."""
        if self.generation is None:
            return {}
        tags = {
            LEASE_OWNER_TAG: self.owner,
            LEASE_EXPIRES_TAG: "0.000",
            LEASE_GENERATION_TAG: str(self.generation),
        }
        self.generation = None
        return tags

    def release(self) -> None:
        """Stop the heartbeat and free the lease if it is still ours."""
        self.stop()
        if self.generation is None:
            return
        try:
            state = self.store.read(self.run_id)
            if state.owner == self.owner and state.generation == self.generation:
                self.store.write(self.run_id, self.owner, 0.0, self.generation)
        except Exception as exc:  # it lapses on its own after ttl_s
            log.warning("releasing the lease on run %s failed: %s", self.run_id, exc)
