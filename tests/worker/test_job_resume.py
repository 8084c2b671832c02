"""``kill -9`` of the job's child at stage boundaries (after fetch, after the baseline, in the
middle of training, after training), each time rerun: the key keeps one run, resumes from
what was left (files, baseline, checkpoint, trained model) and registers exactly one version.
The last rerun is another worker, which waits for the dead holder's lease to lapse before it
takes over. (A kill inside ``register``, between the version and its alias, is the state
``test_job_e2e::test_a_registration_cut_short_is_finished_by_the_rerun`` builds.)"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.worker.job import run_job
from pipeline.worker.job_spec import job_key
from pipeline.worker.lease import read_lease
from pipeline.worker.tags import (
    BASELINE_CACHED_TAG,
    FETCH_CACHED_TAG,
    JOB_KEY_TAG,
    LEASE_GENERATION_TAG,
)
from tests.worker.child_target import patient_run_job, run_job_halting_after
from tests.worker.helpers import build_release_dir, dir_release, job_spec, make_track
from tests.worker.runs_topic import of_type, run_events
from uptake.bus.jobs import ChildJob, LongJob
from uptake.mlflow_contract import stage_time_tag
from uptake.retention import job_dir

# three spawned children (each imports torch, transformers, MLflow) and four trainings
pytestmark = [pytest.mark.slow, pytest.mark.one_backend, pytest.mark.timeout(1800)]


def _key_runs(c: MlflowClient, digest: str) -> list[Any]:
    return c.search_runs(
        [e.experiment_id for e in c.search_experiments()],
        filter_string=f"tags.`{JOB_KEY_TAG}` = '{digest}'",
    )


def _kill_when(
    child: ChildJob, ready: Callable[[], bool], what: str, timeout_s: float = 400
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if child.done():
            raise AssertionError(f"the job ended before {what}: {child.outcome}")
        if time.monotonic() > deadline:
            child.stop(1)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    while not child.done(wait_s=1):
        pass
    assert child.outcome.reason == "crashed"


@pytest.fixture(scope="module")
def resumed(stack, drops: Path, unique, tmp_path_factory) -> dict[str, Any]:
    repo = f"acme/{unique('resume')}"
    build_release_dir(drops, repo)
    release = dir_release(drops, repo)
    track = make_track(
        tmp_path_factory.mktemp("tracks"), "legal", unique("uptake-resume"), sft={"max_steps": 6}
    )
    # a lease long enough to be still live when the test has seen the kill, on a loaded box
    spec = job_spec(stack, release, track, worker="w-first", lease_ttl_s=30.0, heartbeat_s=2.0)
    key = job_key(spec)
    c = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)

    def halted(stage: str) -> tuple[Callable[..., Any], Callable[[], bool], tuple[str, ...]]:
        marker = tmp_path_factory.mktemp("halt") / stage
        return run_job_halting_after, marker.exists, (stage, str(marker))

    checkpoint = job_dir(stack.state_dir, key.digest) / "train" / "sft" / "checkpoints"
    kills: list[tuple[str, tuple[Callable[..., Any], Callable[[], bool], tuple[str, ...]]]] = [
        ("fetch ended", halted("fetch")),
        ("baseline ended", halted("baseline")),
        (
            "a training checkpoint",
            (
                patient_run_job,
                lambda: (checkpoint / "checkpoint-2" / "trainer_state.json").is_file(),
                (),
            ),
        ),
        ("train ended", halted("train")),
    ]
    for attempt, (what, (target, ready, extra)) in enumerate(kills, start=1):
        child = ChildJob(LongJob(target, (spec.model_copy(update={"attempt": attempt}), *extra)))
        _kill_when(child, ready, what)
    # another worker: the dead holder's lease is still live, so it waits for it to lapse
    dead_lease = read_lease(c, _key_runs(c, key.digest)[0].info.run_id)
    read_at = time.time()
    started = time.monotonic()
    last = len(kills) + 1
    outcome = run_job(spec.model_copy(update={"attempt": last, "identity": "w-second"}))
    return {
        "spec": spec,
        "key": key,
        "outcome": outcome,
        "waited_s": time.monotonic() - started,
        "dead_lease": dead_lease,
        "lease_read_at": read_at,
        "client": c,
        "attempts": last,
    }


def test_one_run_one_version_after_four_kills(resumed) -> None:
    assert resumed["outcome"].ok
    c, spec = resumed["client"], resumed["spec"]
    runs = _key_runs(c, resumed["key"].digest)
    assert len(runs) == 1
    versions = c.search_model_versions(f"name = '{spec.track.registered_model}'")
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id


def test_the_rerun_resumed_what_was_left(resumed, tmp_path) -> None:
    c = resumed["client"]
    run = _key_runs(c, resumed["key"].digest)[0]
    assert run.data.tags[FETCH_CACHED_TAG] == "true"
    assert run.data.tags[BASELINE_CACHED_TAG] == "true"
    assert int(run.data.tags[LEASE_GENERATION_TAG]) >= resumed["attempts"]  # one per attempt
    import json

    path = c.download_artifacts(run.info.run_id, "training/result.json", str(tmp_path))
    result = json.loads(Path(path).read_text())
    assert result["resumed_from_step"] >= 2
    assert run.data.metrics["train.steps"] == 6


def test_the_new_owner_waited_for_the_lease(resumed) -> None:
    """The killed holder's lease was live when the other worker came; it took over (its fetch
    stage started) only after the lease had lapsed."""
    from datetime import datetime

    dead = resumed["dead_lease"]
    assert dead.owner == "w-first" and dead.live(now=resumed["lease_read_at"])
    run = _key_runs(resumed["client"], resumed["key"].digest)[0]
    fetch_started = datetime.fromisoformat(run.data.tags[stage_time_tag("fetch", "started")])
    assert fetch_started.timestamp() >= dead.expires_at


def test_one_candidate_registered_and_no_failure(stack, resumed) -> None:
    events = run_events(stack, resumed["spec"].release.release_id, expected=12)
    assert len(of_type(events, "candidate.registered")) == 1
    assert not of_type(events, "run.failed")
    started = {e.attempt for e in of_type(events, "run.started")}
    assert sorted(started) == list(range(1, resumed["attempts"] + 1))
