"""The lease's rules in milliseconds, on an in-memory store whose MLflow can go down
(``fake_lease_store``): lost only to another holder's generation, never to an outage."""

from __future__ import annotations

import time

import pytest

from pipeline.worker.failures import mlflow_unreachable
from pipeline.worker.lease import JobLeaseLost, Lease
from tests.worker.fake_lease_store import MemoryLeaseStore


def _held(store: MemoryLeaseStore, owner: str = "a", ttl_s: float = 0.3) -> Lease:
    lease = Lease(store, "run-1", owner, ttl_s=ttl_s, heartbeat_s=0.05, settle_s=0.0)
    assert lease.try_acquire() is None
    lease.start()
    return lease


def test_an_mlflow_outage_longer_than_the_ttl_keeps_the_lease() -> None:
    store = MemoryLeaseStore()
    lease = _held(store)
    try:
        store.down.set()
        time.sleep(1.0)  # over three TTLs of failed renewals
        assert not lease.lost.is_set(), "an outage is not a takeover"
        store.down.clear()
        time.sleep(0.3)
        lease.fence()  # MLflow answers: still our generation, renewed
        assert store.leases["run-1"].live() and store.leases["run-1"].owner == "a"
    finally:
        lease.release()


def test_another_generation_seen_after_an_outage_loses_the_lease() -> None:
    store = MemoryLeaseStore()
    lease = _held(store)
    try:
        store.down.set()
        time.sleep(0.5)  # our lease lapses in the store while nobody can reach it
        store.down.clear()
        store.leases["run-1"] = store.leases["run-1"].__class__("b", time.time() + 60, 2)
        deadline = time.monotonic() + 2
        while not lease.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lease.lost.is_set()
        with pytest.raises(JobLeaseLost, match="lost to b"):
            lease.fence()
    finally:
        lease.release()
    assert store.leases["run-1"].owner == "b"  # release leaves the new holder's lease alone


def test_a_live_lease_of_another_owner_is_not_taken() -> None:
    store = MemoryLeaseStore()
    first = _held(store, "a", ttl_s=30)
    try:
        second = Lease(store, "run-1", "b", ttl_s=30, heartbeat_s=1, settle_s=0.0)
        holder = second.try_acquire()
        assert holder is not None and holder.owner == "a"
    finally:
        first.release()


def test_unreachable_is_told_from_a_refused_request() -> None:
    from mlflow.exceptions import MlflowException

    store = MemoryLeaseStore()
    store.down.set()
    with pytest.raises(MlflowException) as err:
        store.read("run-1")
    assert mlflow_unreachable(err.value)
    assert not mlflow_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST"))
