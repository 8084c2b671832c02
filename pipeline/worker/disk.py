"""The worker's side of disk retention (``uptake.retention``): notes, the floor, the sweep.

Before a job starts the worker checks the free-space floor (``worker.min_free_gb``; below it,
after a sweep, the job is refused as retryable with reason ``disk_full``) and notes the job
in its folder (``.uptake-job.json``: running, and the fetched release it reads, so no sweep
deletes it under the job). When the job ends the note says registered or failed, and the
caches are swept (``uptake.retention.worker_plan``). Nothing here raises: a note or a sweep
that fails (a full disk, say) is logged, and the job's own outcome stands.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pipeline.worker.fetch import model_dir_for
from pipeline.worker.job_spec import JobSpec, job_key
from uptake.retention import (
    JobNote,
    apply,
    human,
    job_dir,
    low_space,
    worker_plan,
    write_note,
)
from uptake.worker_config import WorkerSettings

log = logging.getLogger(__name__)


def job_folder(spec: JobSpec) -> Path:
    """The job's folder (its plan works in it), keyed as the plan keys it."""
    return job_dir(spec.state_dir, job_key(spec).digest)


def note(spec: JobSpec, state: Literal["running", "registered", "failed"]) -> None:
    """Record the job's state in its folder for the sweep (never raises)."""
    try:
        write_note(
            job_folder(spec),
            JobNote(
                release_id=spec.release.release_id,
                track=spec.track.name,
                state=state,
                model_dir=model_dir_for(spec.state_dir, spec.release),
                updated_at=datetime.now(UTC),
            ),
        )
    except (OSError, ValueError) as exc:
        log.warning("cannot note job %s as %s: %s", spec.release.release_id, state, exc)


def sweep(state_dir: Path, w: WorkerSettings) -> int:
    """Apply the retention policy to the worker's caches; the bytes freed (never raises)."""
    try:
        freed = apply(worker_plan(state_dir, w))
    except Exception as exc:  # retention is housekeeping: never the reason a job fails
        log.warning("retention sweep of %s failed: %s", state_dir, exc)
        return 0
    if freed:
        log.info("retention: %s freed under %s", human(freed), state_dir)
    return freed


def refusal(state_dir: Path, w: WorkerSettings) -> str | None:
    """Why no job may start now (``disk_full``: below ``min_free_gb`` even after a sweep)."""
    if low_space(state_dir, w.min_free_gb) is None:
        return None
    sweep(state_dir, w)
    return low_space(state_dir, w.min_free_gb)
