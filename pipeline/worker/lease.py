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
generation (or could not renew for a whole ``ttl_s``) has lost the lease, and ``fence``
raises ``JobLeaseLost`` before its next stage.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

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


def read_lease(client: Any, run_id: str) -> LeaseState:
    tags = client.get_run(run_id).data.tags
    try:
        expires = float(tags.get(LEASE_EXPIRES_TAG, "0"))
        generation = int(tags.get(LEASE_GENERATION_TAG, "0"))
    except ValueError:  # a hand-edited tag: treat as no lease
        expires, generation = 0.0, 0
    return LeaseState(tags.get(LEASE_OWNER_TAG) or None, expires, generation)


def _write(client: Any, run_id: str, owner: str, expires: float, generation: int) -> None:
    from mlflow.entities import RunTag

    client.log_batch(
        run_id,
        tags=[
            RunTag(LEASE_OWNER_TAG, owner),
            RunTag(LEASE_EXPIRES_TAG, f"{expires:.3f}"),
            RunTag(LEASE_GENERATION_TAG, str(generation)),
        ],
    )


class Lease:
    """The lease on one run: ``try_acquire``, then ``start`` the heartbeat, ``fence`` before
    each stage, ``release`` at the end."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        owner: str,
        ttl_s: float,
        heartbeat_s: float,
        settle_s: float = 0.5,
    ) -> None:
        self.client, self.run_id, self.owner = client, run_id, owner
        self.ttl_s, self.heartbeat_s, self.settle_s = ttl_s, min(heartbeat_s, ttl_s / 3), settle_s
        self.generation: int | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> LeaseState | None:
        """Take the lease if it is free, expired or ours; None when taken, else the holder."""
        state = read_lease(self.client, self.run_id)
        if state.live() and state.owner != self.owner:
            return state
        generation = state.generation + 1
        _write(self.client, self.run_id, self.owner, time.time() + self.ttl_s, generation)
        time.sleep(self.settle_s)
        after = read_lease(self.client, self.run_id)
        if after.owner == self.owner and after.generation == generation:
            self.generation = generation
            return None
        return after

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="uptake-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                state = read_lease(self.client, self.run_id)
                if state.owner != self.owner or state.generation != self.generation:
                    log.error("lease on run %s taken over by %s", self.run_id, state.owner)
                    self.lost.set()
                    return
                _write(
                    self.client, self.run_id, self.owner, time.time() + self.ttl_s, state.generation
                )
                renewed = time.monotonic()
            except Exception as exc:  # MLflow unreachable: keep trying until the lease lapses
                log.warning("renewing the lease on run %s failed: %s", self.run_id, exc)
                if time.monotonic() - renewed > self.ttl_s:
                    self.lost.set()
                    return

    def fence(self) -> None:
        """Raise ``JobLeaseLost`` unless we still hold the lease (checked in MLflow, not cached)."""
        if self.generation is None:
            raise JobLeaseLost(f"lease on run {self.run_id} not held")
        state = read_lease(self.client, self.run_id)
        if self.lost.is_set() or state.owner != self.owner or state.generation != self.generation:
            raise JobLeaseLost(
                f"lease on run {self.run_id} lost to {state.owner} (generation "
                f"{state.generation}, ours {self.generation}); not writing"
            )

    def release(self) -> None:
        """Stop the heartbeat and free the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        if self.generation is None:
            return
        try:
            state = read_lease(self.client, self.run_id)
            if state.owner == self.owner and state.generation == self.generation:
                _write(self.client, self.run_id, self.owner, 0.0, self.generation)
        except Exception as exc:  # it lapses on its own after ttl_s
            log.warning("releasing the lease on run %s failed: %s", self.run_id, exc)
