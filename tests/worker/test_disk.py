"""The worker keeps its disk bounded and survives a full one (issue 19, item 6).

- the free-space floor refuses a job before it starts (retryable, ``disk_full``), no child;
- after every job the caches are swept: a registered job's folder goes, a failed one's stays
  for its resume, fetched releases past ``keep_snapshots`` go;
- a full disk mid-job fails the job as retryable with reason ``disk_full``, never a crash.
  Injected two ways: ``ENOSPC`` from ``os.sendfile`` (the syscall ``shutil`` copies a drop
  with: what a full file system answers), and a real write limit in the job's child
  (``RLIMIT_FSIZE``: the kernel answers ``EFBIG``, CPython ignores ``SIGXFSZ``), which reaches
  every writer the job uses, not only the one patched.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.worker.failures import JobFailed
from pipeline.worker.job import run_job
from pipeline.worker.job_spec import JobSpec
from pipeline.worker.service import WorkerService
from pipeline.worker.tags import FAILURE_RETRYABLE_TAG, FAILURE_TAG
from tests.worker.helpers import build_release_dir, dir_release, drops_source, job_spec, make_track
from tests.worker.runs_topic import run_events
from tests.worker.test_service import (
    group,
    jobs_seen,
    publish,
    recording_job,
    release,
    track,
    with_tracks,
)
from uptake.events import RunFailed
from uptake.retention import FETCHED_MARK, JOB_NOTE
from uptake.settings import Settings

FSIZE_LIMIT = 256 * 1024  # below the tiny model's weights (~1.6 MB), above everything else


def _snapshot(state: Path, rev: str, seconds_ago: float) -> Path:
    folder = state / "models" / "acme_old" / rev
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10_000)
    (folder / FETCHED_MARK).write_text("x")
    when = time.time() - seconds_ago
    for p in (folder, *folder.iterdir()):
        os.utime(p, (when, when))
    return folder


def test_below_the_floor_a_job_is_refused_before_it_starts(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(settings, tmp_path, track(tmp_path, "legal"), min_free_gb=1e9, preload=False)
    event = release()
    publish(s, event)
    stats = WorkerService(s, group_id=group(s), target=recording_job, live=False).run_once(60)
    (result,) = stats.results
    assert not result.ok and result.retryable and result.stage == "setup"
    assert (result.message or "").startswith("disk_full: ")
    assert "worker.min_free_gb" in (result.message or "")
    assert jobs_seen(s) == []  # no child ran
    (failed,) = [e for e in run_events(s, event.release_id, 1) if isinstance(e, RunFailed)]
    assert failed.retryable and failed.reason.startswith("disk_full: ")


def test_after_each_job_the_caches_are_swept(settings: Settings, tmp_path: Path) -> None:
    s = with_tracks(
        settings,
        tmp_path,
        track(tmp_path, "ok"),
        track(tmp_path, "refuse-legal"),
        keep_snapshots=1,
        min_free_gb=0,
        preload=False,
    )
    snaps = [_snapshot(s.state_dir, f"r{i}", seconds_ago=i * 100) for i in range(3)]
    publish(s, release())
    stats = WorkerService(s, group_id=group(s), target=recording_job, live=False).run_once(60)
    assert [(r.track, r.ok) for r in stats.results] == [("ok", True), ("refuse-legal", False)]
    assert [p.exists() for p in snaps] == [True, False, False]
    (left,) = list((s.state_dir / "jobs").iterdir())  # the registered job's folder is gone
    note = json.loads((left / JOB_NOTE).read_text())
    assert note["track"] == "refuse-legal" and note["state"] == "failed"


@pytest.mark.one_backend
def test_enospc_mid_job_fails_it_as_retryable_disk_full(
    stack: Settings, drops: Path, unique, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = f"acme/{unique('full')}"
    build_release_dir(drops, repo)
    event = dir_release(drops, repo)
    spec = job_spec(stack, event, make_track(tmp_path / "tracks", "legal", unique("uptake-full")))
    calls = []

    def no_space(*args: object) -> int:
        calls.append(args)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "sendfile", no_space)
    with pytest.raises(JobFailed) as failed:
        run_job(spec)
    assert failed.value.retryable and failed.value.stage == "fetch"
    assert failed.value.reason.startswith("disk_full: OSError: [Errno 28] No space left")
    assert len(calls) == 1  # failed at once: seconds of retries free no space
    (event_failed,) = [
        e for e in run_events(stack, event.release_id, 1) if isinstance(e, RunFailed)
    ]
    assert event_failed.retryable and event_failed.reason.startswith("disk_full: ")
    client = MlflowClient(tracking_uri=stack.tracking_uri)
    run = client.get_run(event_failed.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG].startswith("disk_full: ")
    assert run.data.tags[FAILURE_RETRYABLE_TAG] == "true"


def fsize_limited_job(spec: JobSpec) -> object:
    """The real job in the worker's child, with a file-size limit the fetch runs into."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    return run_job(spec)


@pytest.mark.slow
@pytest.mark.one_backend
def test_a_write_limit_in_the_child_is_a_disk_full_failure_not_a_crash(
    stack: Settings, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('efbig')}"
    build_release_dir(drops, repo)
    event = dir_release(drops, repo)
    legal = make_track(tmp_path / "tracks", "legal", unique("uptake-efbig"))
    s = stack.model_copy(
        update={
            "tracks": [legal],
            "sources": [drops_source(drops)],
            "worker": stack.worker.model_copy(
                update={
                    "device": "cpu",
                    "experiment": "uptake-disk-test",
                    "preload": False,
                    "min_free_gb": 0,
                    "retry_backoff_s": 0.2,
                }
            ),
        }
    )
    publish(s, event)
    worker = WorkerService(
        s,
        group_id=unique("pipeline"),
        target=fsize_limited_job,
        live=False,
        static_membership=False,
    )
    stats = worker.run_once(timeout_s=300)
    (result,) = [r for r in stats.results if r.release_id == event.release_id]
    assert not result.ok and result.reason == "error"  # the job said so: no crash, no rerun
    assert result.retryable and result.attempts == 1 and result.stage == "fetch"
    assert "disk_full: " in (result.message or "") and "File too large" in (result.message or "")
    assert not list((s.state_dir / "models").rglob("model.safetensors"))  # no partial copy kept


def test_what_counts_as_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.worker.failures import as_disk_full, is_disk_full, is_transient

    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert is_disk_full(enospc) and not is_transient(enospc)
    assert is_disk_full(OSError(errno.EDQUOT, "quota")) and is_disk_full(OSError(errno.EFBIG, "x"))
    rust = "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
    assert is_disk_full(RuntimeError(rust + '"No space left on device" })'))  # safetensors
    assert is_disk_full(RuntimeError("write failed (os error 28)"))  # Rust's Display form
    try:
        try:
            raise enospc
        except OSError as inner:
            raise RuntimeError("saving the checkpoint failed") from inner
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.ECONNREFUSED, "refused")) and is_transient(
        OSError(errno.ECONNREFUSED, "refused")
    )
    torch_says = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert as_disk_full(torch_says, "train", tmp_path) is torch_says  # room left: not the disk
    usage = type("Usage", (), {"total": 10 << 30, "used": 10 << 30, "free": 1 << 20})
    monkeypatch.setattr("shutil.disk_usage", lambda _path: usage)
    failed = as_disk_full(torch_says, "train", tmp_path)
    assert isinstance(failed, JobFailed) and failed.retryable and failed.stage == "train"
    assert (
        failed.reason.startswith("disk_full: 1 MiB free") and "file write failed" in failed.reason
    )
