"""A directory release through every stage: one registered version with its tags, metrics,
artifacts, the challenger alias and ``candidate.registered``; a duplicate adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.worker.job import run_job
from pipeline.worker.job_spec import job_key
from pipeline.worker.tags import JOB_KEY_TAG, REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from tests.worker.runs_topic import of_type, run_events
from uptake.demo.config import CPU_HOUR_USD
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASE_MODEL_TAG,
    BASE_REVISION_TAG,
    BASELINE_PREFIX,
    BASELINE_RESULTS_ARTIFACT,
    CHALLENGER_ALIAS,
    COST_PER_TASK,
    CPU_HOUR_PRICE,
    CRITERION_PASS_RATE,
    DETECTED_AT_TAG,
    GENERATION_SECONDS,
    N_TASKS,
    RECIPE_SHA_TAG,
    RELEASE_CREATED_AT_TAG,
    RELEASE_ID_TAG,
    RESULTS_ARTIFACT,
    SUITE_SHA_TAG,
    TRACK_TAG,
    WORKER_STAGES,
    stage_time_tag,
)

# a whole flow: on one MLflow store (the store-specific calls have their own tests on both)
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]
CREATED_AT = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)  # the release's commit time on the hub


@pytest.fixture(scope="module")
def adopted(stack, drops: Path, unique, tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tracks")
    repo = f"acme/{unique('base')}"
    build_release_dir(drops, repo)
    release = dir_release(drops, repo).model_copy(update={"created_at": CREATED_AT})
    track = make_track(root, "legal", unique("uptake-legal"))
    spec = job_spec(stack, release, track, cpu_hour_price=CPU_HOUR_USD)  # as the demo's
    outcome = run_job(spec)
    return {"spec": spec, "outcome": outcome, "release": release, "track": track}


def client(stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)


def test_release_becomes_a_registered_version(stack, adopted) -> None:
    assert adopted["outcome"].ok
    c = client(stack)
    spec = adopted["spec"]
    versions = c.search_model_versions(f"name = '{spec.track.registered_model}'")
    assert len(versions) == 1
    mv = versions[0]
    assert mv.tags[RELEASE_ID_TAG] == spec.release.release_id
    assert mv.tags[TRACK_TAG] == "legal"
    assert mv.tags[BASE_MODEL_TAG] == spec.release.repo_id
    assert mv.tags[BASE_REVISION_TAG] == spec.release.revision
    assert mv.tags[RECIPE_SHA_TAG] == job_key(spec).recipe_sha
    assert mv.tags[SUITE_SHA_TAG] == job_key(spec).suite_sha
    assert mv.tags[JOB_KEY_TAG] == job_key(spec).digest
    assert "uptake.score.all_pass_rate" in mv.tags
    assert (
        c.get_model_version_by_alias(spec.track.registered_model, CHALLENGER_ALIAS).version
        == mv.version
    )

    run = c.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    for name in (RELEASE_ID_TAG, BASE_MODEL_TAG, BASE_REVISION_TAG, RECIPE_SHA_TAG, SUITE_SHA_TAG):
        assert tags[name] == mv.tags[name]
    assert tags[TRACK_TAG] == "legal" and DETECTED_AT_TAG in tags
    assert datetime.fromisoformat(tags[RELEASE_CREATED_AT_TAG]) == CREATED_AT  # the timeline
    assert tags[REGISTERED_VERSION_TAG] == mv.version
    for stage in WORKER_STAGES:
        started, ended = (
            tags[stage_time_tag(stage, "started")],
            tags[stage_time_tag(stage, "ended")],
        )
        assert started <= ended
    for name in (ALL_PASS_RATE, CRITERION_PASS_RATE):
        assert 0 <= metrics[name] <= 1 and 0 <= metrics[BASELINE_PREFIX + name] <= 1
    assert metrics["train.steps"] == 4
    # priced by the hour of the CPU it evaluated on, from the measured generation time
    n_tasks = metrics[N_TASKS]
    for prefix in ("", BASELINE_PREFIX):
        assert metrics[prefix + CPU_HOUR_PRICE] == CPU_HOUR_USD
        assert metrics[prefix + GENERATION_SECONDS] > 0
        assert metrics[prefix + COST_PER_TASK] == pytest.approx(
            CPU_HOUR_USD * metrics[prefix + GENERATION_SECONDS] / 3600 / n_tasks
        )
    artifacts = {a.path for a in c.list_artifacts(mv.run_id, "eval")}
    assert {RESULTS_ARTIFACT, BASELINE_RESULTS_ARTIFACT} <= artifacts
    assert "model/config.json" in {a.path for a in c.list_artifacts(mv.run_id, "model")}


def test_events_on_the_runs_topic(stack, adopted) -> None:
    rid = adopted["release"].release_id
    events = run_events(stack, rid, expected=10)
    registered = of_type(events, "candidate.registered")
    assert len(registered) == 1
    mv = client(stack).search_model_versions(f"name = '{adopted['track'].registered_model}'")[0]
    assert registered[0].version == mv.version
    assert registered[0].base_all_pass_rate is not None
    assert of_type(events, "run.started")[0].track == "legal"
    stages = [e.stage for e in of_type(events, "run.stage")]
    assert set(WORKER_STAGES) <= set(stages)
    train = [e for e in of_type(events, "run.stage") if e.stage == "train" and e.step]
    assert train and train[-1].step == train[-1].total_steps == 4
    assert not of_type(events, "run.failed")


def test_duplicate_release_adds_no_version(stack, adopted) -> None:
    spec = adopted["spec"].model_copy(update={"attempt": 2, "identity": "w-other"})
    assert run_job(spec).ok
    c = client(stack)
    assert len(c.search_model_versions(f"name = '{spec.track.registered_model}'")) == 1
    events = run_events(stack, spec.release.release_id, expected=12)
    assert len(of_type(events, "candidate.registered")) == 2  # re-emitted, same version
    assert len({e.version for e in of_type(events, "candidate.registered")}) == 1


def test_a_registration_cut_short_is_finished_by_the_rerun(stack, adopted) -> None:
    """The state a kill between ``create_model_version`` and the alias leaves: the version
    exists, the alias and the run's version tags do not, the run is still RUNNING. The next
    delivery finishes the registration (alias, tags, FINISHED) and announces it, once."""
    c = client(stack)
    spec = adopted["spec"]
    name = spec.track.registered_model
    (mv,) = c.search_model_versions(f"name = '{name}'")
    c.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    for tag in (REGISTERED_MODEL_TAG, REGISTERED_VERSION_TAG):
        c.delete_tag(mv.run_id, tag)
    c.update_run(mv.run_id, status="RUNNING")
    events = run_events(stack, spec.release.release_id, expected=12)
    before = len(of_type(events, "candidate.registered"))

    assert run_job(spec.model_copy(update={"attempt": 3, "identity": "w-third"})).ok
    assert str(c.get_model_version_by_alias(name, CHALLENGER_ALIAS).version) == str(mv.version)
    run = c.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[REGISTERED_VERSION_TAG] == str(mv.version)
    assert run.data.tags[REGISTERED_MODEL_TAG] == name
    assert len(c.search_model_versions(f"name = '{name}'")) == 1
    events = run_events(stack, spec.release.release_id, expected=before + 1)
    registered = of_type(events, "candidate.registered")
    assert len(registered) == before + 1 and registered[-1].version == str(mv.version)
