"""Disk retention (DESIGN.md "Disk"): what may go from the state dir, decided from files alone.

Every cache has a rule, applied by the worker after each job, by serving after each swap and
by ``uptake gc`` (``--dry-run`` prints the plan):

- ``<state>/jobs/<key>``: a job's folder (checkpoints, merged model, cached scores). Dropped
  once its version is registered (MLflow holds the model; ``worker.keep_registered_jobs``);
  an unfinished job's folder is kept for its resume until it is ``keep_unfinished_job_days``
  old. The worker notes each job in ``<job>/.uptake-job.json`` (``JobNote``): whether it is
  registered, and which fetched release it reads.
- ``<state>/models/<repo>/<revision>``: fetched releases. The ``keep_snapshots`` newest are
  kept, and every one an unfinished job reads; one being fetched (its lock held) is skipped.
- ``<state>/baselines/<repo>/<revision>``: baseline scores; the ``keep_baselines`` newest.
- ``<state>/serving/<model>/<version>``: serving's downloads. The champion (or the version a
  replica serves) and the ``serving.keep_versions`` newest besides; dot-named folders (a
  download in progress, a discarded copy) and anything that is not a version folder are left
  alone, and a kept version is never touched inside (its ``.uptake-manifest.json`` stays).

Plans are lists of ``Removal``s; ``apply`` deletes them and reports the bytes freed. Nothing
here imports a service package: the worker and serving call in, and ``uptake gc`` reads the
champion aliases from MLflow itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from uptake.worker_config import WorkerSettings

log = logging.getLogger(__name__)

JOB_NOTE = ".uptake-job.json"
FETCHED_MARK = ".uptake-fetched"  # pipeline.worker.fetch.COMPLETE_MARK
SERVING_MANIFEST = ".uptake-manifest.json"  # serving.champions.MANIFEST
GB = 1_000_000_000


def jobs_dir(state_dir: Path) -> Path:
    """``<state>/jobs``: every job's folder is in it."""
    return state_dir / "jobs"


def job_dir(state_dir: Path, key_digest: str) -> Path:
    """``<state>/jobs/<key digest, 32 hex>``: one job key's folder, the same for every attempt
    (the worker's plan works in it; its note for this sweep is written there)."""
    return jobs_dir(state_dir) / key_digest[:32]


class JobNote(BaseModel):
    """What the worker notes in a job's folder for retention (``JOB_NOTE``)."""

    release_id: str
    track: str
    state: Literal["running", "registered", "failed"]
    model_dir: Path | None = None  # the fetched release the job reads
    updated_at: datetime


class Removal(BaseModel):
    """One folder that retention deletes, its size and why."""

    path: Path
    bytes: int
    why: str
    lock: Path | None = None  # held while a fetch writes the folder: skipped when taken


def disk_bytes(path: Path) -> int:
    """Bytes ``path`` takes on disk (allocated blocks; links not followed)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return _allocated(path)
    except OSError:
        return 0
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            total += _allocated(Path(root) / name)
    return total


def _allocated(path: Path) -> int:
    try:
        st = path.lstat()
    except OSError:
        return 0
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def _newest_mtime(path: Path) -> float:
    """The newest modification time under ``path`` (itself included)."""
    newest = 0.0
    for root, _dirs, files in os.walk(path):
        for p in [Path(root), *(Path(root) / f for f in files)]:
            try:
                newest = max(newest, p.lstat().st_mtime)
            except OSError:
                continue
    return newest


# -- jobs ---------------------------------------------------------------------------------------


def write_note(job_dir: Path, note: JobNote) -> None:
    """Record ``note`` in ``job_dir`` (created if need be), replaced atomically."""
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / (JOB_NOTE + ".partial")
    tmp.write_text(note.model_dump_json(), encoding="utf-8")
    tmp.replace(job_dir / JOB_NOTE)


def read_note(job_dir: Path) -> JobNote | None:
    try:
        return JobNote.model_validate_json((job_dir / JOB_NOTE).read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def _children(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` (not links, not dot-named: temporary or being removed)."""
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
        )
    except OSError:
        return []


def job_removals(state_dir: Path, w: WorkerSettings, now: float) -> tuple[list[Removal], set[Path]]:
    """Job folders to drop, and the fetched releases the kept unfinished jobs read."""
    removals: list[Removal] = []
    in_use: set[Path] = set()
    max_age = w.keep_unfinished_job_days * 86_400
    for job in _children(jobs_dir(state_dir)):
        note = read_note(job)
        if note is not None and note.state == "registered":
            if not w.keep_registered_jobs:
                why = f"job of {note.release_id} [{note.track}] registered: MLflow holds the model"
                removals.append(Removal(path=job, bytes=disk_bytes(job), why=why))
            continue
        age = now - _newest_mtime(job)
        if age > max_age:
            what = f"of {note.release_id} [{note.track}]" if note else "(no note)"
            why = f"unfinished job {what}, untouched for {age / 86_400:.1f} days"
            removals.append(Removal(path=job, bytes=disk_bytes(job), why=why))
        elif note is not None and note.model_dir is not None:
            in_use.add(Path(os.path.realpath(note.model_dir)))
    return removals, in_use


# -- fetched releases and baselines -------------------------------------------------------------


def _revisions(folder: Path, partial: bool = False) -> list[Path]:
    """``<folder>/<repo>/<revision>`` folders (dot-named ones excluded), the ``.partial``
    ones (a fetch under way or cut short) only when ``partial``."""
    return [
        rev
        for repo in _children(folder)
        for rev in _children(repo)
        if (rev.suffix == ".partial") == partial
    ]


def _fetch_lock(rev: Path) -> Path:
    final = rev.with_suffix("") if rev.suffix == ".partial" else rev
    return Path(str(final) + ".lock")  # pipeline.worker.fetch takes it around a fetch


def snapshot_removals(
    state_dir: Path, keep: int, in_use: set[Path], stale_s: float, now: float
) -> list[Removal]:
    """Fetched releases past the ``keep`` newest that no unfinished job reads, and copies cut
    short (``.partial``) untouched for ``stale_s``."""
    complete = [r for r in _revisions(state_dir / "models") if (r / FETCHED_MARK).is_file()]
    complete.sort(key=lambda r: (r / FETCHED_MARK).stat().st_mtime, reverse=True)
    removals = []
    for rev in complete[keep:]:
        if Path(os.path.realpath(rev)) in in_use:
            continue
        why = f"fetched release {rev.parent.name}/{rev.name} past the {keep} newest"
        removals.append(Removal(path=rev, bytes=disk_bytes(rev), why=why, lock=_fetch_lock(rev)))
    for part in _revisions(state_dir / "models", partial=True):
        age = now - _newest_mtime(part)
        if age > stale_s:
            why = (
                f"fetch cut short {part.parent.name}/{part.name}, untouched {age / 86_400:.1f} days"
            )
            removals.append(
                Removal(path=part, bytes=disk_bytes(part), why=why, lock=_fetch_lock(part))
            )
    return removals


def baseline_removals(state_dir: Path, keep: int) -> list[Removal]:
    revisions = _revisions(state_dir / "baselines")
    revisions.sort(key=_newest_mtime, reverse=True)
    return [
        Removal(
            path=rev,
            bytes=disk_bytes(rev),
            why=f"baselines of {rev.parent.name}/{rev.name} past the {keep} newest",
        )
        for rev in revisions[keep:]
    ]


def worker_plan(state_dir: Path, w: WorkerSettings, now: float | None = None) -> list[Removal]:
    """Everything the worker's caches may lose now (see the module docstring)."""
    now = time.time() if now is None else now
    jobs, in_use = job_removals(state_dir, w, now)
    return (
        jobs
        + snapshot_removals(
            state_dir, w.keep_snapshots, in_use, w.keep_unfinished_job_days * 86_400, now
        )
        + baseline_removals(state_dir, w.keep_baselines)
    )


# -- serving's versions ---------------------------------------------------------------------------


def version_folders(model_dir: Path) -> list[Path]:
    """A served model's version folders: numeric names only (dot-named temporary downloads,
    discarded copies and files such as logs are not versions)."""
    return [p for p in _children(model_dir) if p.name.isdigit()]


def serving_removals(model_dir: Path, keep: int, protected: Iterable[str]) -> list[Removal]:
    """Versions of one model past the ``keep`` newest, never one in ``protected`` (the
    champion, the version a replica serves). Newest: most recently downloaded or loaded."""
    protect = set(protected)
    versions = [v for v in version_folders(model_dir) if v.name not in protect]
    versions.sort(key=lambda v: v.stat().st_mtime, reverse=True)
    return [
        Removal(
            path=v,
            bytes=disk_bytes(v),
            why=f"served version {model_dir.name}/{v.name} past the {keep} newest",
        )
        for v in versions[keep:]
    ]


# -- applying -------------------------------------------------------------------------------------


def apply(removals: Iterable[Removal]) -> int:
    """Delete each removal's folder; the bytes freed. A fetched release whose fetch lock is
    held (being fetched right now) is skipped; a failure is logged, not raised."""
    from filelock import FileLock, Timeout

    freed = 0
    for removal in removals:
        lock_path = removal.lock
        try:
            if lock_path is not None and lock_path.exists():
                with FileLock(str(lock_path), timeout=0):
                    _remove(removal.path)
            else:
                _remove(removal.path)
        except Timeout:
            log.info("retention: %s is in use (locked); kept", removal.path)
            continue
        except OSError as exc:
            log.warning("retention: cannot remove %s: %s", removal.path, exc)
            continue
        freed += removal.bytes
        log.info("retention: removed %s (%s): %s", removal.path, human(removal.bytes), removal.why)
    return freed


def _remove(path: Path) -> None:
    if not path.exists():
        return
    # renamed out of the way first: a reader never sees a half-deleted folder under its name
    trash = path.with_name(f".{path.name}.removing-{os.getpid()}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # an emptied repo/model folder goes too


# -- free space -------------------------------------------------------------------------------


class DiskUse(BaseModel):
    """The state dir's size and its disk's free space (``uptake status``)."""

    path: str
    used_bytes: int
    free_bytes: int
    total_bytes: int


def disk_use(state_dir: Path, *, measure: bool = True) -> DiskUse:
    """``state_dir``'s bytes (``measure``: walk it) and its file system's free and total."""
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    used = disk_bytes(state_dir) if measure and state_dir.exists() else 0
    return DiskUse(
        path=str(state_dir), used_bytes=used, free_bytes=usage.free, total_bytes=usage.total
    )


def low_space(state_dir: Path, min_free_gb: float) -> str | None:
    """Why no job may start now (free space below the floor), or None."""
    if min_free_gb <= 0:
        return None
    free = disk_use(state_dir, measure=False).free_bytes
    if free >= min_free_gb * GB:
        return None
    return (
        f"disk_full: {free / GB:.1f} GB free on the state dir's disk ({state_dir}), below "
        f"worker.min_free_gb = {min_free_gb:g}; the job was not started (run `uptake gc` or "
        "free space; a later delivery retries)"
    )


def human(n: int) -> str:
    """``n`` bytes for people (decimal units, as disks are sold)."""
    if n < 1000:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


def stamp(path: Path) -> None:
    """Mark ``path`` as just used (serving: a version loaded from the cache is recent)."""
    with contextlib.suppress(OSError):
        os.utime(path)
