"""Stage ``register``: one model version per job key, with its tags and the ``challenger`` alias.

Registration is idempotent on the key (``MlflowFront.create_version``; ``register_candidate``
composes the same calls for a bare client): before creating a version the job looks for one
whose ``uptake.job_key`` tag is the key's and takes that instead; after creating one it looks
again, and if a racing worker created another, the lower version number stays and the other
is deleted. So duplicated events, a retry after a crash between "created" and "event
sent", or two workers at once all leave one version. The registry's tests call this function
too (tests/registry/helpers.py), so they exercise the production path.

The version is created from ``<run artifact uri>/model`` (where ``train_and_log`` logged the
merged model) with ``MlflowClient.create_model_version``: no logged-model entity is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.worker.mlflow_front import MlflowFront, ModelVersion, Run
from uptake.events import CandidateRegistered
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    CRITERION_PASS_RATE,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


def register_candidate(
    client: MlflowClient,
    registered_model: str,
    run_id: str,
    key_digest: str,
    tags: Mapping[str, str],
    *,
    set_challenger: bool = True,
) -> tuple[ModelVersion, bool]:
    """The key's model version (created now or found) and whether it was created now: the
    job's own path (``MlflowFront``'s look-up, ``create_version`` and alias) for callers that
    hold a bare client. ``set_challenger``: point the ``challenger`` alias at a new version."""
    front = MlflowFront(client)
    existing = front.versions_of_key(registered_model, key_digest)
    if existing:
        return existing[0], False
    version, created = front.create_version(
        registered_model, front.get_run(run_id), key_digest, tags
    )
    if created and set_challenger:
        front.set_challenger(registered_model, version.version)
    return version, created


def candidate_event(
    version: Any,
    registered_model: str,
    run_id: str,
    metrics: Mapping[str, float],
    *,
    release_id: str,
    suite_sha: str,
    producer: str,
) -> CandidateRegistered:
    """The ``candidate.registered`` of a version, scores from the run's ``metrics``."""
    return CandidateRegistered(
        producer=producer,
        release_id=release_id,
        run_id=run_id,
        registered_model=registered_model,
        version=str(version.version),
        model_uri=f"models:/{registered_model}/{version.version}",
        suite_sha=suite_sha,
        all_pass_rate=metrics[ALL_PASS_RATE],
        criterion_pass_rate=metrics[CRITERION_PASS_RATE],
        base_all_pass_rate=metrics.get(BASELINE_PREFIX + ALL_PASS_RATE),
        base_criterion_pass_rate=metrics.get(BASELINE_PREFIX + CRITERION_PASS_RATE),
    )


def event_of_run(version: ModelVersion, run: Run, producer: str) -> CandidateRegistered:
    """The ``candidate.registered`` of a version from its run as read (typed front: ``Run``,
    ``ModelVersion`` of ``pipeline.worker.mlflow_front``)."""
    tags = {**run.tags, **version.tags}
    return candidate_event(
        version,
        version.name,
        version.run_id,
        run.metrics,
        release_id=tags[RELEASE_ID_TAG],
        suite_sha=tags[SUITE_SHA_TAG],
        producer=producer,
    )
