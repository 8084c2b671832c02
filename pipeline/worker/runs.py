"""The one MLflow run of a job: its tags, stage tags and link.

Before any work the worker looks its key up (``WorkerMlflow.job_run``): the run says whether
the job is done (a registered version), under way elsewhere (a live lease) or to be resumed.
Two workers that create a run for one key at the same moment settle on the oldest; the other
run is deleted, so the key keeps one run.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.worker.job_spec import JobKey, JobSpec
from pipeline.worker.tags import JOB_KEY_TAG, STAGE_TAG
from uptake.mlflow_contract import (
    BASE_MODEL_TAG,
    BASE_REVISION_TAG,
    DETECTED_AT_TAG,
    RECIPE_SHA_TAG,
    RELEASE_CREATED_AT_TAG,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
    TAG_VALUE_MAX,
    TRACK_TAG,
    stage_time_tag,
)
from uptake.urls import redact_userinfo


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_tags(spec: JobSpec, key: JobKey) -> dict[str, str]:
    """The tags a job's run carries from its start (DESIGN.md plus track and timeline)."""
    release = spec.release
    tags = {
        JOB_KEY_TAG: key.digest,
        RELEASE_ID_TAG: release.release_id,
        BASE_MODEL_TAG: release.repo_id,
        BASE_REVISION_TAG: release.revision,
        RECIPE_SHA_TAG: key.recipe_sha,
        SUITE_SHA_TAG: key.suite_sha,
        TRACK_TAG: spec.track.name,
        DETECTED_AT_TAG: release.occurred_at.isoformat(timespec="milliseconds"),
        "mlflow.runName": f"{spec.track.name}:{release.repo_id}@{release.revision[:12]}",
    }
    if release.created_at is not None:
        tags[RELEASE_CREATED_AT_TAG] = release.created_at.isoformat(timespec="milliseconds")
    return {k: v[:TAG_VALUE_MAX] for k, v in tags.items()}


def stage_start_tags(stage: str) -> dict[str, str]:
    """The tags of ``stage``'s start: its time and the current-stage tag."""
    return {stage_time_tag(stage, "started"): now_iso(), STAGE_TAG: stage}


def run_url(tracking_uri: str, exp_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (for the alerter's message): without the tracking URI's
    ``user:password@``, as the link goes out on the bus."""
    return f"{redact_userinfo(tracking_uri).rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"
