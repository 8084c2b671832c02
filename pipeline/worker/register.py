"""Stage ``register``: one model version per job key, with its tags and the ``challenger`` alias.

``register_candidate`` is idempotent on the key: before creating a version it looks for one
whose ``uptake.job_key`` tag is the key's and returns that instead; after creating one it
looks again, and if a racing worker created another, the lower version number stays and the
other is deleted. So duplicated events, a retry after a crash between "created" and "event
sent", or two workers at once all leave one version. The registry's tests call this function
too (tests/registry/helpers.py), so they exercise the production path.

The version is created from ``<run artifact uri>/model`` (where ``train_and_log`` logged the
merged model) with ``MlflowClient.create_model_version``: no logged-model entity is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.worker.tags import JOB_KEY_TAG

if TYPE_CHECKING:
    from pipeline.worker.mlflow_front import ModelVersion, Run
from uptake.events import CandidateRegistered
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    CHALLENGER_ALIAS,
    CRITERION_PASS_RATE,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
    TAG_VALUE_MAX,
)


def ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def versions_of_key(client: Any, registered_model: str, key_digest: str) -> list[Any]:
    """Versions of ``registered_model`` tagged with the job key, lowest number first."""
    found = client.search_model_versions(
        f"name = '{registered_model}' and tags.`{JOB_KEY_TAG}` = '{key_digest}'"
    )
    return sorted(found, key=lambda mv: int(mv.version))


def register_candidate(
    client: Any,
    registered_model: str,
    run_id: str,
    key_digest: str,
    tags: Mapping[str, str],
    *,
    set_challenger: bool = True,
) -> tuple[Any, bool]:
    """The key's model version (created now or found) and whether it was created now.

    ``tags`` go on the version (release id, track, base model, revision, shas, scores); the
    key's tag is added. ``set_challenger``: point the ``challenger`` alias at a new version.
    """
    existing = versions_of_key(client, registered_model, key_digest)
    if existing:
        return existing[0], False
    ensure_registered_model(client, registered_model)
    run = client.get_run(run_id)
    all_tags = {k: str(v)[:TAG_VALUE_MAX] for k, v in tags.items()}
    all_tags[JOB_KEY_TAG] = key_digest
    created = client.create_model_version(
        registered_model, f"{run.info.artifact_uri}/model", run_id=run_id, tags=all_tags
    )
    found = versions_of_key(client, registered_model, key_digest)
    winner = found[0] if found else created
    if str(winner.version) != str(created.version):
        client.delete_model_version(registered_model, created.version)  # a racer was first
        return winner, False
    if set_challenger:
        client.set_registered_model_alias(registered_model, CHALLENGER_ALIAS, str(created.version))
    return created, True


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
