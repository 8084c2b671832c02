"""The job's logic on an in-memory MLflow front (``FakeMlflow``) and stand-in stages: resume,
re-emit, lease wait and loss, the OOM retry tag, failure tags and how often the job asks
MLflow, each in milliseconds. The real stack's wiring is in test_job_e2e / test_job_resume /
test_job_failures / test_rebalance."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.eval import EvalResult
from pipeline.worker import stages
from pipeline.worker.failures import JobFailed, PermanentJobFailure
from pipeline.worker.job import Job
from pipeline.worker.job_events import JobEvents
from pipeline.worker.job_spec import JobSpec
from pipeline.worker.lease import JobLeaseLost
from pipeline.worker.mlflow_front import WorkerMlflow, lease_tags
from pipeline.worker.plan import plan_job
from pipeline.worker.runs import run_tags
from pipeline.worker.stages import (
    Baseline,
    Checked,
    Fetched,
    Scores,
    StageContext,
    StageSet,
    Trained,
)
from pipeline.worker.tags import (
    ATTEMPT_TAG,
    BASELINE_CACHED_TAG,
    FAILURE_RETRYABLE_TAG,
    FAILURE_TAG,
    FETCH_CACHED_TAG,
    JOB_KEY_TAG,
    LEASE_EXPIRES_TAG,
    LEASE_OWNER_TAG,
    OOM_RETRY_TAG,
    REGISTERED_VERSION_TAG,
    STAGE_TAG,
)
from tests.worker.fake_mlflow import FakeMlflow
from tests.worker.helpers import job_spec, make_track
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    CRITERION_PASS_RATE,
    RELEASE_ID_TAG,
    WORKER_STAGES,
    stage_time_tag,
)

METRICS = {ALL_PASS_RATE: 0.75, CRITERION_PASS_RATE: 0.8}


class Published:
    """The job's producer: events in a list."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish(self, event: Any) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def of(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]


class Stages:
    """Stand-in stage functions that record which ran; ``fail`` raises in a stage."""

    def __init__(self, *, cached: bool = False, fail: dict[str, BaseException] | None = None):
        self.ran: list[str] = []
        self.cached = cached
        self.fail = fail or {}

    def _enter(self, stage: str) -> None:
        self.ran.append(stage)
        if stage in self.fail:
            raise self.fail[stage]

    def set(self) -> StageSet:
        def fetch(ctx: StageContext) -> Fetched:
            self._enter("fetch")
            return Fetched(ctx.plan.work_dir / "model", cached=self.cached)

        def preflight(ctx: StageContext, fetched: Fetched) -> Checked:
            self._enter("preflight")
            return Checked(ctx.plan.recipe("cpu"), ctx.plan.suite())

        def holdout(ctx: StageContext, checked: Checked) -> None:
            self._enter("holdout")

        def baseline(ctx: StageContext, fetched: Fetched, checked: Checked) -> Baseline:
            self._enter("baseline")
            return Baseline(EvalResult.model_construct(), cached=self.cached)

        def train(ctx: StageContext, fetched: Fetched, checked: Checked) -> Trained:
            self._enter("train")
            return Trained(ctx.plan.work_dir / "trained")

        def evaluate(ctx: StageContext, t: Trained, c: Checked, b: Baseline) -> Scores:
            self._enter("evaluate")
            return Scores(dict(METRICS))

        def register(ctx: StageContext, scores: Scores) -> stages.Registered:
            self._enter("register")
            return stages.register(ctx, scores)

        return StageSet(fetch, preflight, holdout, baseline, train, evaluate, register)


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    from tests.worker.test_service import release
    from uptake.settings import Settings

    track = make_track(tmp_path / "tracks", "legal")
    s = Settings(home=tmp_path / "home", kafka_bootstrap="127.0.0.1:9")
    return job_spec(
        s,
        release(),
        track,
        tracking_uri="http://127.0.0.1:9",
        heartbeat_s=0.05,
        lease_ttl_s=0.6,
        retry_backoff_s=0.01,
    )


def run(
    spec: JobSpec, front: FakeMlflow, fake: Stages | None = None, **kw: Any
) -> tuple[Any, Published, Stages]:
    fake = fake or Stages()
    published = Published()
    typed: WorkerMlflow = front  # the fake implements the Protocol (mypy checks this file too)
    job = Job(
        spec,
        events=JobEvents(spec, producer=published),
        front=typed,
        stages=fake.set(),
        lease_settle_s=0.0,
        **kw,
    )
    try:
        return job.run(), published, fake
    finally:
        job.close()


def the_run(front: FakeMlflow) -> Any:
    (only,) = front.runs.values()
    return only


def test_a_fresh_job_runs_every_stage_and_registers_once(spec: JobSpec) -> None:
    front = FakeMlflow()
    outcome, published, fake = run(spec, front)
    assert outcome.ok
    assert fake.ran == list(WORKER_STAGES)
    run_ = the_run(front)
    assert run_.status == "FINISHED"
    for stage in WORKER_STAGES:  # the timeline
        assert stage_time_tag(stage, "started") in run_.tags
        assert stage_time_tag(stage, "ended") in run_.tags
    assert run_.tags[FETCH_CACHED_TAG] == "false"
    assert run_.tags[BASELINE_CACHED_TAG] == "false"
    assert run_.tags[REGISTERED_VERSION_TAG] == "1"
    assert float(run_.tags[LEASE_EXPIRES_TAG]) == 0.0  # released
    (version,) = front.versions[spec.track.registered_model]
    assert version.tags[JOB_KEY_TAG] == run_.tags[JOB_KEY_TAG]
    assert front.aliases[(spec.track.registered_model, "challenger")] == "1"
    (event,) = published.of("candidate.registered")
    assert (event.version, event.all_pass_rate) == ("1", 0.75)
    # "is it registered yet?" asked once; the run read back only by the lease
    assert front.calls["versions_of_key"] == 1
    assert front.calls["job_run"] == 1


def test_a_resumed_job_reuses_its_run_and_clears_the_failure(spec: JobSpec) -> None:
    front = FakeMlflow()
    with pytest.raises(JobFailed):
        run(spec, front, Stages(fail={"train": RuntimeError("killed")}))
    failed = the_run(front)
    assert failed.status == "FAILED" and FAILURE_TAG in failed.tags
    again = spec.model_copy(update={"attempt": 2})
    outcome, _published, _fake = run(again, front, Stages(cached=True))
    assert outcome.ok
    resumed = the_run(front)  # one run per key
    assert resumed.run_id == failed.run_id and resumed.status == "FINISHED"
    assert FAILURE_TAG not in resumed.tags and FAILURE_RETRYABLE_TAG not in resumed.tags
    assert resumed.tags[FETCH_CACHED_TAG] == "true"  # recorded from the stages' returns
    assert resumed.tags[BASELINE_CACHED_TAG] == "true"
    assert resumed.tags[ATTEMPT_TAG] == "2"
    assert len(front.versions[spec.track.registered_model]) == 1


def _registered(spec: JobSpec, front: FakeMlflow, *, finished: bool) -> Any:
    key = plan_job(spec).key
    tags = run_tags(spec, key)
    rid = front.add_run(spec.worker.experiment, tags, "FINISHED" if finished else "RUNNING")
    front.update(rid.run_id, metrics=dict(METRICS))
    version = front.add_version(
        spec.track.registered_model,
        rid.run_id,
        {JOB_KEY_TAG: key.digest, RELEASE_ID_TAG: spec.release.release_id},
    )
    if finished:
        front.set_tags(rid.run_id, {REGISTERED_VERSION_TAG: version.version})
    return rid


def test_a_registered_key_re_emits_without_any_stage(spec: JobSpec) -> None:
    front = FakeMlflow()
    _registered(spec, front, finished=True)
    outcome, published, fake = run(spec, front)
    assert outcome.ok and fake.ran == []
    (event,) = published.of("candidate.registered")
    assert (event.version, event.criterion_pass_rate) == ("1", 0.8)
    assert event.suite_sha == plan_job(spec).key.suite_sha
    assert front.calls["versions_of_key"] == 1
    assert front.calls["get_run"] == 0  # the run the lookup returned is the version's


def test_a_registration_cut_short_is_finished_on_re_emit(spec: JobSpec) -> None:
    front = FakeMlflow()
    rid = _registered(spec, front, finished=False)
    outcome, published, fake = run(spec, front)
    assert outcome.ok and fake.ran == []
    run_ = front.runs[rid.run_id]
    assert run_.status == "FINISHED" and run_.tags[REGISTERED_VERSION_TAG] == "1"
    assert front.aliases[(spec.track.registered_model, "challenger")] == "1"
    assert len(published.of("candidate.registered")) == 1


def _leased_by_other(spec: JobSpec, front: FakeMlflow, expires: float) -> Any:
    key = plan_job(spec).key
    other = front.add_run(spec.worker.experiment, run_tags(spec, key))
    front.set_tags(other.run_id, {JOB_KEY_TAG: key.digest, **lease_tags("w-other", expires, 1)})
    return other


def test_a_job_waits_out_a_live_lease_then_re_emits_what_the_holder_registered(
    spec: JobSpec,
) -> None:
    front = FakeMlflow()
    other = _leased_by_other(spec, front, time.time() + 60)
    key = plan_job(spec).key
    looks: list[int] = []

    def holder_finishes(name: str) -> None:
        if name == "versions_of_key":
            looks.append(1)
            if len(looks) == 3:  # the holder registers while we wait
                front.add_version(
                    spec.track.registered_model,
                    other.run_id,
                    {JOB_KEY_TAG: key.digest, RELEASE_ID_TAG: spec.release.release_id},
                )
                front.update(other.run_id, metrics=dict(METRICS))
                front.set_tags(other.run_id, {REGISTERED_VERSION_TAG: "1"})

    front.on_call = holder_finishes
    outcome, published, fake = run(spec, front)
    assert outcome.ok and fake.ran == []
    (waits,) = [e for e in published.of("run.stage") if "waits" in (e.message or "")]
    assert "leased by w-other" in waits.message
    assert len(published.of("candidate.registered")) == 1
    assert front.runs[other.run_id].tags[LEASE_OWNER_TAG] == "w-other"  # never taken


def test_a_lapsed_lease_is_taken_over_and_the_job_resumes(spec: JobSpec) -> None:
    front = FakeMlflow()
    other = _leased_by_other(spec, front, time.time() + 0.3)
    outcome, _published, fake = run(spec, front)
    assert outcome.ok and fake.ran == list(WORKER_STAGES)
    assert front.runs[other.run_id].tags[REGISTERED_VERSION_TAG] == "1"
    assert front.runs[other.run_id].tags[LEASE_OWNER_TAG] == spec.identity


def test_a_lease_held_past_the_deadline_gives_up_without_failure_tags(spec: JobSpec) -> None:
    front = FakeMlflow()
    other = _leased_by_other(spec, front, time.time() + 60)
    patience = spec.worker.model_copy(update={"job_deadline_s": 0.3})
    short = spec.model_copy(update={"worker": patience})
    with pytest.raises(JobLeaseLost, match="w-other"):
        run(short, front)
    assert FAILURE_TAG not in front.runs[other.run_id].tags


def test_a_lease_lost_mid_job_stops_before_registering(spec: JobSpec) -> None:
    front = FakeMlflow()

    fake = Stages()
    original = fake.set()

    def train(ctx: StageContext, fetched: Fetched, checked: Checked) -> Trained:
        fake.ran.append("train")
        front.set_tags(ctx.run_id, lease_tags("w-thief", time.time() + 60, 99))
        deadline = time.monotonic() + 5
        while not ctx.lease_lost.is_set():  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the heartbeat never saw the thief"
            time.sleep(0.01)
        return Trained(ctx.plan.work_dir / "trained")

    stolen = replace(original, train=train)
    published = Published()
    job = Job(
        spec,
        events=JobEvents(spec, producer=published),
        front=front,
        stages=stolen,
        lease_settle_s=0.0,
    )
    with pytest.raises(JobLeaseLost):
        job.run()
    assert "evaluate" not in fake.ran
    assert spec.track.registered_model not in front.versions
    assert FAILURE_TAG not in the_run(front).tags  # the run is the thief's now
    assert published.of("run.failed") == []


@pytest.mark.parametrize(
    ("error", "retryable"),
    [(PermanentJobFailure("train", "model refused: too big"), False), (RuntimeError("boom"), True)],
)
def test_a_failed_stage_tags_the_run_and_publishes_run_failed(
    spec: JobSpec, error: BaseException, retryable: bool
) -> None:
    front = FakeMlflow()
    with pytest.raises(JobFailed) as failed:
        run(spec, front, Stages(fail={"train": error}))
    assert failed.value.stage == "train"
    run_ = the_run(front)
    assert run_.status == "FAILED"
    assert run_.tags[STAGE_TAG] == "train"
    assert run_.tags[FAILURE_RETRYABLE_TAG] == str(retryable).lower()
    assert ("too big" if not retryable else "RuntimeError: boom") in run_.tags[FAILURE_TAG]
    assert stage_time_tag("baseline", "ended") in run_.tags  # waiting tags went out with it


def test_out_of_memory_in_training_tags_the_retry_and_halves_the_batch(
    spec: JobSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    front = FakeMlflow()
    tries: list[bool] = []

    def train_once(ctx: StageContext, model_dir: Path, recipe: Any, *, halve: bool) -> Path:
        tries.append(halve)
        if not halve:
            assert OOM_RETRY_TAG not in front.runs[ctx.run_id].tags
            raise torch.OutOfMemoryError("CUDA out of memory")
        assert OOM_RETRY_TAG in front.runs[ctx.run_id].tags  # written before the retry
        return model_dir / "trained"

    monkeypatch.setattr(stages, "_train_once", train_once)
    fake = Stages()
    real_train = replace(fake.set(), train=stages.train)
    published = Published()
    job = Job(
        spec,
        events=JobEvents(spec, producer=published),
        front=front,
        stages=real_train,
        lease_settle_s=0.0,
    )
    assert job.run().ok
    assert tries == [False, True]
    assert "batch" in the_run(front).tags[OOM_RETRY_TAG]


def test_a_fresh_job_keeps_to_its_bookkeeping_budget(spec: JobSpec) -> None:
    """What a job asks of the front with no heartbeat in between (issue 19: "is it registered
    yet?" once, the lease's first look from the run as looked up, the stages' tags in one
    write per edge, the last tags with the lease's release in one)."""
    calm = spec.worker.model_copy(update={"heartbeat_s": 30.0, "lease_ttl_s": 100.0})
    front = FakeMlflow()
    outcome, _published, _fake = run(spec.model_copy(update={"worker": calm}), front)
    assert outcome.ok
    assert dict(front.calls) == {
        "job_run": 1,
        "versions_of_key": 1,
        "get_run": 2,  # the lease's verify after its write; registration's fence
        "set_tags": 6,  # lease take; fetch, baseline, train, evaluate starts; the last batch
        "create_version": 1,
        "set_challenger": 1,
        "set_status": 1,
    }


def test_a_diverged_loss_goes_out_as_unknown_not_as_a_refused_event(spec: JobSpec) -> None:
    """Events carry finite numbers only: a NaN loss or an infinite ETA is published as None
    (building the event with them would raise inside the training's progress callback)."""
    published = Published()
    events = JobEvents(spec, producer=published)
    events.stage("train", force=True, step=3, loss=float("nan"), eta_s=float("inf"))
    (stage,) = published.of("run.stage")
    assert stage.step == 3 and stage.loss is None and stage.eta_s is None
