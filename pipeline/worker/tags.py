"""The worker's own MLflow run tags: the job key, its lease, its outcome.

Only the worker (and ``uptake status``, in this package) reads these; the names every service
shares (release id, track, timeline, metrics) come from ``uptake.mlflow_contract``.
"""

from __future__ import annotations

from typing import Final

JOB_KEY_TAG: Final = "uptake.job_key"  # sha256 of (release id, track, recipe sha, suite sha)
# the lease of a key (docs/worker.md "Leases"): owner, expiry (epoch seconds), fencing generation
LEASE_OWNER_TAG: Final = "uptake.lease.owner"
LEASE_EXPIRES_TAG: Final = "uptake.lease.expires_at"
LEASE_GENERATION_TAG: Final = "uptake.lease.generation"
ATTEMPT_TAG: Final = "uptake.attempt"  # how many times a worker started this job
STAGE_TAG: Final = "uptake.stage"  # the stage running now (or where it failed)
FAILURE_TAG: Final = "uptake.failure"  # one line, set when the job failed
FAILURE_RETRYABLE_TAG: Final = "uptake.failure.retryable"
REGISTERED_MODEL_TAG: Final = "uptake.registered_model"
REGISTERED_VERSION_TAG: Final = "uptake.registered_version"  # set once registered
OOM_RETRY_TAG: Final = "uptake.oom_retry"  # "batch 8x1 -> 4x2" after a CUDA out-of-memory
FETCH_CACHED_TAG: Final = "uptake.fetch.cached"  # "true": the files were already there
BASELINE_CACHED_TAG: Final = "uptake.baseline.cached"  # "true": another job computed it
