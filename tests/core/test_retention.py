"""Disk retention (issue 19, item 6): what goes from the state dir, decided from files alone."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from filelock import FileLock

from uptake.retention import (
    FETCHED_MARK,
    SERVING_MANIFEST,
    JobNote,
    apply,
    disk_use,
    low_space,
    serving_removals,
    worker_plan,
    write_note,
)
from uptake.worker_config import WorkerSettings

DAY = 86_400.0


def _age(path: Path, seconds_ago: float) -> None:
    """Set every mtime under ``path`` to ``seconds_ago``."""
    when = time.time() - seconds_ago
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))


def _job(state: Path, key: str, state_of: str | None, model_dir: Path | None = None) -> Path:
    job = state / "jobs" / key
    (job / "train" / "checkpoint-2").mkdir(parents=True)
    (job / "train" / "checkpoint-2" / "model.safetensors").write_bytes(b"w" * 50_000)
    if state_of is not None:
        note = JobNote(
            release_id=f"hub:acme/{key}@r",
            track="legal",
            state=state_of,  # type: ignore[arg-type]
            model_dir=model_dir,
            updated_at=datetime.now(UTC),
        )
        write_note(job, note)
    return job


def _snapshot(state: Path, repo: str, rev: str, seconds_ago: float) -> Path:
    folder = state / "models" / repo / rev
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"m" * 20_000)
    (folder / FETCHED_MARK).write_text("x")
    _age(folder, seconds_ago)
    return folder


def test_a_registered_jobs_folder_goes_an_unfinished_one_stays_until_old(tmp_path: Path) -> None:
    registered = _job(tmp_path, "a" * 32, "registered")
    failed = _job(tmp_path, "b" * 32, "failed")
    running = _job(tmp_path, "c" * 32, "running")
    stale = _job(tmp_path, "d" * 32, "failed")
    _age(stale, 15 * DAY)
    plan = worker_plan(tmp_path, WorkerSettings())
    assert {r.path for r in plan} == {registered, stale}
    assert all(r.bytes >= 50_000 for r in plan)
    assert "MLflow holds the model" in next(r.why for r in plan if r.path == registered)
    freed = apply(plan)
    assert freed >= 100_000
    assert not registered.exists() and not stale.exists()
    assert failed.exists() and running.exists()  # their checkpoints serve a resume
    kept = worker_plan(tmp_path, WorkerSettings(keep_registered_jobs=True))
    assert kept == []


def test_the_newest_snapshots_stay_and_any_an_unfinished_job_reads(tmp_path: Path) -> None:
    snaps = [_snapshot(tmp_path, "acme_m", f"r{i}", seconds_ago=i * 100) for i in range(5)]
    partial = tmp_path / "models" / "acme_m" / "r9.partial"
    partial.mkdir()
    _job(tmp_path, "e" * 32, "failed", model_dir=snaps[4])  # the oldest, still needed
    plan = worker_plan(tmp_path, WorkerSettings(keep_snapshots=2))
    assert {r.path for r in plan} == {snaps[2], snaps[3]}
    apply(plan)
    assert [s.exists() for s in snaps] == [True, True, False, False, True]
    assert partial.exists()  # a fetch under way (or to resume) is never a snapshot to drop


def test_a_snapshot_being_fetched_is_skipped(tmp_path: Path) -> None:
    snaps = [_snapshot(tmp_path, "acme_m", f"r{i}", seconds_ago=i * 100) for i in range(2)]
    plan = worker_plan(tmp_path, WorkerSettings(keep_snapshots=1))
    assert [r.path for r in plan] == [snaps[1]]
    with FileLock(str(snaps[1]) + ".lock"):  # what fetch holds while it writes
        assert apply(plan) == 0
    assert snaps[1].exists()
    assert apply(plan) > 0 and not snaps[1].exists()


def test_baselines_keep_the_newest_releases(tmp_path: Path) -> None:
    revs = []
    for i in range(4):
        rev = tmp_path / "baselines" / "acme_m" / f"r{i}"
        rev.mkdir(parents=True)
        (rev / "suite.jsonl").write_text("{}\n")
        _age(rev, i * 100)
        revs.append(rev)
    plan = worker_plan(tmp_path, WorkerSettings(keep_baselines=2))
    assert {r.path for r in plan} == {revs[2], revs[3]}


def _version(model: Path, name: str, seconds_ago: float) -> Path:
    v = model / name
    v.mkdir(parents=True)
    (v / "model.safetensors").write_bytes(b"s" * 10_000)
    (v / SERVING_MANIFEST).write_text("{}")
    _age(v, seconds_ago)
    return v


def test_serving_keeps_the_champion_and_the_newest_and_skips_what_is_not_a_version(
    tmp_path: Path,
) -> None:
    model = tmp_path / "serving" / "legal"
    versions = {n: _version(model, n, seconds_ago=(10 - int(n)) * 100) for n in "12345"}
    downloading = model / ".6-k2j3"  # a download in progress (champions.download's temp)
    downloading.mkdir()
    (model / "notes.txt").write_text("not a version")
    plan = serving_removals(model, keep=2, protected=["1"])
    assert {r.path for r in plan} == {versions["2"], versions["3"]}
    apply(plan)
    assert sorted(p.name for p in model.iterdir()) == [".6-k2j3", "1", "4", "5", "notes.txt"]
    for kept in ("1", "4", "5"):
        assert (versions[kept] / SERVING_MANIFEST).is_file()


def test_the_free_space_floor(tmp_path: Path) -> None:
    assert low_space(tmp_path, 0) is None
    assert low_space(tmp_path, 0.000001) is None
    reason = low_space(tmp_path, 10**9)
    assert reason is not None and reason.startswith("disk_full: ")
    assert "worker.min_free_gb = 1e+09" in reason


def test_disk_use_measures_the_state_dir(tmp_path: Path) -> None:
    _snapshot(tmp_path, "acme_m", "r0", 0)
    use = disk_use(tmp_path)
    assert use.used_bytes >= 20_000 and use.free_bytes > 0 and use.total_bytes >= use.free_bytes
    assert disk_use(tmp_path / "not-yet").used_bytes == 0


@pytest.mark.parametrize("keep", [0, 1])
def test_nothing_outside_the_caches_is_touched(tmp_path: Path, keep: int) -> None:
    (tmp_path / "judge-cache").mkdir()
    (tmp_path / "judge-cache" / "x.json").write_text("{}")
    (tmp_path / "stack.json").write_text("{}")
    apply(worker_plan(tmp_path, WorkerSettings(keep_snapshots=keep, keep_baselines=keep)))
    assert (tmp_path / "judge-cache" / "x.json").exists() and (tmp_path / "stack.json").exists()


def test_a_fetch_cut_short_goes_once_stale(tmp_path: Path) -> None:
    fresh = tmp_path / "models" / "acme_m" / "r1.partial"
    stale = tmp_path / "models" / "acme_m" / "r2.partial"
    for part in (fresh, stale):
        part.mkdir(parents=True)
        (part / "model.safetensors").write_bytes(b"p" * 1000)
    _age(stale, 15 * DAY)
    plan = worker_plan(tmp_path, WorkerSettings())
    assert [r.path for r in plan] == [stale]
    assert plan[0].lock == tmp_path / "models" / "acme_m" / "r2.lock"
