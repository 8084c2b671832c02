"""``run_job(spec)``: one release adopted into one track, inside the child ``LongJob`` spawns.

Stages (``uptake.mlflow_contract.WORKER_STAGES``): fetch, preflight, holdout, baseline,
train, evaluate, register. All of them record into one MLflow run, found or created by the
job key before any work (``runs.py``):

- the key already has a model version: re-publish its ``candidate.registered``, succeed;
- the key's run is leased by another live worker: wait (bounded by the job's deadline) until
  it registers (then as above) or its lease lapses (then take over and resume);
- otherwise take the lease, mark the run RUNNING and run the stages; each is skipped or
  resumed from what an earlier attempt left (cached files and baseline, the training
  checkpoint), and registration is idempotent on the key (``register.py``).

Every stage's start and end are run tags (``uptake.stage.<stage>.started_at``), next to the
release's ``created_at`` and detection time: the adoption timeline. Progress goes out as
``run.stage`` events. A failure publishes ``run.failed`` (stage, one-line reason, track, run
link), marks the run FAILED and raises ``JobFailed`` (``RetryableJobFailure`` or
``PermanentJobFailure``) with its ``stage``, which ``LongJob`` carries into ``JobOutcome``;
failure classes are in ``failures.py``. Losing the lease to another worker raises
``JobLeaseLost`` (retryable) and leaves the run to its new holder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pipeline.worker.failures import (
    JobFailed,
    StageTimeout,
    as_disk_full,
    is_permanent,
    is_transient,
    mlflow_unreachable,
)
from pipeline.worker.job_events import JobEvents, failure_event
from pipeline.worker.job_spec import JobKey, JobSpec
from pipeline.worker.lease import JobLeaseLost, Lease, LeaseState, lease_of_tags
from pipeline.worker.mlflow_front import MlflowFront, ModelVersion, Run, WorkerMlflow
from pipeline.worker.plan import JobPlan, plan_job
from pipeline.worker.register import candidate_event, event_of_run
from pipeline.worker.runs import now_iso, run_tags, run_url, stage_start_tags
from pipeline.worker.stages import (
    STAGES,
    Registered,
    Scores,
    StageContext,
    StageSet,
    mark_registered,
    registered_tags,
)
from pipeline.worker.tags import (
    ATTEMPT_TAG,
    BASELINE_CACHED_TAG,
    FAILURE_RETRYABLE_TAG,
    FAILURE_TAG,
    FETCH_CACHED_TAG,
    REGISTERED_VERSION_TAG,
    STAGE_TAG,
)
from uptake.bus.jobs import JobOutcome
from uptake.errors import is_retryable, one_line
from uptake.events import CandidateRegistered
from uptake.mlflow_contract import stage_time_tag

log = logging.getLogger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def stage_timer(seconds: float, stage: str) -> Iterator[None]:
    """Raise StageTimeout in the main thread once ``seconds`` have passed (SIGALRM); off in
    other threads, where the job's deadline (``LongJob``) still applies."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise StageTimeout(f"stage {stage} ran past its {seconds:g} s timeout")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Job:
    """One job: its plan, then the stages of ``stages.py`` through ``run_stage``, all MLflow
    bookkeeping through ``front`` (``MlflowFront`` unless a test hands in a fake)."""

    def __init__(
        self,
        spec: JobSpec,
        events: JobEvents | None = None,
        front: WorkerMlflow | None = None,
        stages: StageSet = STAGES,
        lease_settle_s: float = 0.5,
    ) -> None:
        self.spec = spec
        self.lease_settle_s = lease_settle_s  # the lease's write-then-verify wait
        self.key: JobKey | None = None
        self.front: WorkerMlflow = front or MlflowFront.at(spec.tracking_uri)
        self.fns = stages
        self.events = events or JobEvents(spec)
        self.found: Run | None = None  # as the lookup returned it: read once, kept
        self.stage = "fetch"
        self.lease: Lease | None = None
        self.started = time.monotonic()
        self.work_dir: Path | None = None
        self.plan: JobPlan | None = None
        self._pending: dict[str, str] = {}  # run tags that go out with the next write

    # -- helpers -------------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self.found.run_id if self.found is not None else None

    @property
    def url(self) -> str | None:
        if self.found is None:
            return None
        return run_url(self.spec.tracking_uri, self.found.experiment_id, self.found.run_id)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on transient errors with doubling backoff. Once the job holds its
        lease, MLflow not answering is waited out instead (capped backoff, not counted as a
        retry): the job keeps its lease and its work until MLflow is back, bounded by the
        stage timeout and the job deadline (issue 19). Before the lease there is nothing to
        keep: the retries run out and the release is redelivered later (``service.py``)."""
        delay = self.spec.worker.retry_backoff_s
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if self.lease is not None and mlflow_unreachable(exc):
                    log.warning(
                        "%s: MLflow unreachable, waiting %.1fs for it: %s", what, delay, exc
                    )
                elif not is_transient(exc) or attempt >= self.spec.worker.transient_retries:
                    raise
                else:
                    attempt += 1
                    log.warning(
                        "%s failed (attempt %d/%d), retrying in %.1fs: %s",
                        what,
                        attempt,
                        self.spec.worker.transient_retries + 1,
                        delay,
                        exc,
                    )
                time.sleep(delay)
                delay = min(max(delay, 0.1) * 2, self.spec.worker.retry_backoff_max_s)

    def run_stage(
        self,
        stage: str,
        fn: Callable[[], T],
        cached_tag: str | None = None,
        *,
        quick: bool = False,
    ) -> T:
        """One stage: fence the lease, tag start and end, publish progress, retry, time out.

        ``cached_tag``: the stage's result has a ``cached`` flag, recorded under that tag. The
        end tag and that flag go out with the next stage's start (or ``flush_tags``): one
        MLflow request per stage edge instead of three. ``quick`` (preflight, holdout,
        register: seconds): its start waits for the next write too; ``run.stage`` events
        still say at once where the job is."""
        self.stage = stage
        if self.lease is not None:
            lease = self.lease
            # the heartbeat's recent check; registration reads it fresh right before its write
            self.retrying("lease check", lambda: lease.fence(fresh=False))
        if quick:
            self._pending.update(stage_start_tags(stage))
        else:
            self.flush_tags(stage_start_tags(stage))
        self.events.stage(stage, force=True, message="started")
        with stage_timer(self.spec.worker.stage_timeout_s, stage):
            value = self.retrying(stage, fn)
        self._pending[stage_time_tag(stage, "ended")] = now_iso()
        if cached_tag is not None:
            self._pending[cached_tag] = str(bool(getattr(value, "cached"))).lower()  # noqa: B009
        self.events.stage(stage, force=True, message="done")
        return value

    def flush_tags(self, tags: dict[str, str] | None = None) -> None:
        """Write ``tags`` with those waiting (a stage's end, its cached flag) in one request."""
        batch = {**self._pending, **(tags or {})}
        rid = self.run_id
        if not batch or rid is None:
            return
        self.retrying("run tags", lambda: self.front.set_tags(rid, batch))
        self._pending = {}

    def reemit(self, version: ModelVersion, known: Run | None = None) -> JobOutcome:
        """Re-publish a registered key's ``candidate.registered`` (finishing a registration a
        crash cut short). ``known``: the version's run as the look-up just returned it."""
        run = self._registration_finished(version, known)
        if run is None:
            # the version was created, then the job died before the alias and the run's tags:
            # it was never announced, so finish its registration as the dead job would have
            log.warning("%s: finishing the registration of version %s", self.key, version.version)
            self.front.set_challenger(version.name, version.version)
            mark_registered(self.front, version)
            run = self.front.get_run(version.run_id)
        elif run.status != "FINISHED":
            self.front.set_status(version.run_id, "FINISHED")
        self.events.publish(event_of_run(version, run, self.events_producer_name))
        log.info("%s already registered as version %s; re-published", self.key, version.version)
        return JobOutcome(ok=True)

    events_producer_name = "pipeline-worker"

    def _registration_finished(self, version: ModelVersion, known: Run | None) -> Run | None:
        """The version's run when it records its registration as done, else None. While
        another worker's live lease holds the run, that worker is finishing it right now:
        wait (up to two lease terms) instead of racing it. A live lease in this worker's own
        name is a dead earlier attempt (a worker runs one job at a time). ``known``: the run
        as just read (the first look then costs no request)."""
        deadline = time.monotonic() + 2 * self.spec.worker.lease_ttl_s
        while True:
            if known is not None and known.run_id == version.run_id:
                run = known
            else:
                run = self.front.get_run(version.run_id)
            known = None  # any next look reads it again
            if REGISTERED_VERSION_TAG in run.tags:
                return run
            holder = lease_of_tags(run.tags)
            if not holder.live() or holder.owner == self.spec.identity:
                return None
            if time.monotonic() > deadline:
                return None
            time.sleep(min(self.spec.worker.heartbeat_s, 0.5))

    def registered(self) -> ModelVersion | None:
        assert self.key is not None
        found = self.front.versions_of_key(self.spec.track.registered_model, self.key.digest)
        return found[0] if found else None

    # -- the job -------------------------------------------------------------------------------

    def run(self) -> JobOutcome:
        try:
            return self._run()
        except JobLeaseLost:
            raise  # the run is another worker's now: neither tag nor event from us
        except Exception as exc:
            raise self._fail(as_disk_full(exc, self.stage, self.spec.state_dir)) from exc

    def _run(self) -> JobOutcome:
        spec = self.spec
        self.plan = plan_job(spec)  # the key from snapshots of the recipe and suite
        self.key = key = self.plan.key
        self.found = self.retrying(
            "MLflow lookup",
            lambda: self.front.job_run(spec.worker.experiment, key.digest, run_tags(spec, key)),
        )
        self.events.run_id = self.found.run_id
        # asked once here; again only after waiting out another worker's lease
        if (version := self.retrying("MLflow lookup", self.registered)) is not None:
            return self.reemit(version, known=self.found)
        if not self._take_lease():
            version = self.retrying("MLflow lookup", self.registered)
            assert version is not None
            return self.reemit(version)
        try:
            return self._stages()
        finally:
            assert self.lease is not None
            self.lease.release()

    def _take_lease(self) -> bool:
        """Hold the key's lease (True), or see the key registered meanwhile (False)."""
        assert self.found is not None
        lease = Lease(
            self.front,
            self.found.run_id,
            self.spec.identity,
            self.spec.worker.lease_ttl_s,
            self.spec.worker.heartbeat_s,
            settle_s=self.lease_settle_s,
        )
        deadline = self.started + self.spec.worker.job_deadline_s
        waited = False
        hint = [lease_of_tags(self.found.tags)]  # the first try: the lease as the lookup read it

        def take() -> LeaseState | None:
            return lease.try_acquire(hint.pop() if hint else None)

        while (holder := self.retrying("lease", take)) is not None:
            if self.retrying("MLflow lookup", self.registered) is not None:
                return False
            if time.monotonic() >= deadline:
                raise JobLeaseLost(
                    f"{self.key}: leased by {holder.owner} for longer than the job's deadline"
                )
            if not waited:  # said once: the progress board and the rebalance test read it
                self.events.stage(
                    "fetch",
                    force=True,
                    message=f"{self.spec.identity} waits: leased by {holder.owner}",
                )
                waited = True
            log.info("run %s is leased by %s; waiting", self.found.run_id, holder.owner)
            time.sleep(min(self.spec.worker.heartbeat_s, max(0.2, holder.expires_at - time.time())))
        # after a wait, the holder may have registered and released between our last look and
        # the take (without one, the look before the take is a moment old and registration's
        # own check settles a race)
        if waited and self.retrying("MLflow lookup", self.registered) is not None:
            lease.release()
            return False
        self.lease = lease
        lease.start()
        return True

    def _stages(self) -> JobOutcome:
        spec, front, run, plan = self.spec, self.front, self.found, self.plan
        assert run is not None and plan is not None and self.lease is not None
        lease = self.lease

        def begin() -> None:
            if run.status != "RUNNING":  # as looked up: its status and failure tags are ours
                front.set_status(run.run_id, "RUNNING")
            for tag in (FAILURE_TAG, FAILURE_RETRYABLE_TAG):
                if tag in run.tags:
                    front.delete_tag(run.run_id, tag)

        self.retrying("run start", begin)
        self._pending[ATTEMPT_TAG] = str(spec.attempt)  # with fetch's start
        self.events.started()
        self.work_dir = plan.work_dir
        ctx = StageContext(
            spec, plan, front, run, self.events, lease_lost=lease.lost, fence=lease.fence
        )
        fns = self.fns
        fetched = self.run_stage("fetch", lambda: fns.fetch(ctx), cached_tag=FETCH_CACHED_TAG)
        checked = self.run_stage("preflight", lambda: fns.preflight(ctx, fetched), quick=True)
        self.run_stage("holdout", lambda: fns.holdout(ctx, checked), quick=True)
        base = self.run_stage(
            "baseline", lambda: fns.baseline(ctx, fetched, checked), cached_tag=BASELINE_CACHED_TAG
        )
        trained = self.run_stage("train", lambda: fns.train(ctx, fetched, checked))
        scores = self.run_stage("evaluate", lambda: fns.evaluate(ctx, trained, checked, base))
        tries: list[Registered] = []

        def register() -> Registered:
            found = self.registered() if tries else None  # a retry: the first may have created it
            done = Registered(found, created=False) if found else fns.register(ctx, scores)
            tries.append(done)
            return done

        done = self.run_stage("register", register, quick=True)
        # the run's last writes, one batch: the stages' last tags, the version it became and
        # the lease freed (fenced by registration a moment ago; the heartbeat stopped first so
        # no renewal follows), then FINISHED; then the event
        lease.stop()
        finished = {**self._pending, **registered_tags(done.version), **lease.freed_tags()}
        self._pending = {}
        self.retrying("run finish", lambda: front.set_tags(run.run_id, finished))
        self.retrying("run finish", lambda: front.set_status(run.run_id, "FINISHED"))
        event = self._candidate(done, scores)
        self.retrying("candidate.registered", lambda: self.events.publish(event))
        return JobOutcome(ok=True)

    def _candidate(self, done: Registered, scores: Scores) -> CandidateRegistered:
        """A new version's scores are the ones just measured: no need to read the run back."""
        if not done.created:
            run = self.front.get_run(done.version.run_id)
            return event_of_run(done.version, run, self.events_producer_name)
        assert self.key is not None
        return candidate_event(
            done.version,
            self.spec.track.registered_model,
            done.version.run_id,
            scores.metrics,
            release_id=self.spec.release.release_id,
            suite_sha=self.key.suite_sha,
            producer=self.events_producer_name,
        )

    # -- failure -------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> JobFailed:
        if isinstance(exc, JobFailed):
            stage, reason, retryable = exc.stage, exc.reason, is_retryable(exc)
        else:
            stage = self.stage
            reason = one_line(f"{type(exc).__name__}: {exc}")
            retryable = not is_permanent(exc)
        reason = one_line(reason)
        log.error(
            "job %s failed in %s (%s): %s",
            self.key,
            stage,
            "retryable" if retryable else "permanent",
            reason,
        )
        rid = self.run_id
        if rid is not None:
            try:
                tags = {
                    **self._pending,
                    STAGE_TAG: stage,
                    FAILURE_TAG: reason[:4000],
                    FAILURE_RETRYABLE_TAG: str(retryable).lower(),
                }
                self._pending = {}
                self.front.set_tags(rid, tags)
                self.front.set_status(rid, "FAILED")
            except Exception as tag_exc:  # MLflow down: the event still goes out
                log.warning("could not mark run %s failed: %s", rid, tag_exc)
        try:
            self.events.publish(
                failure_event(
                    self.spec, stage, reason, retryable=retryable, run_id=rid, run_url=self.url
                )
            )
        except Exception as pub_exc:
            log.warning("run.failed not published: %s", pub_exc)
        return JobFailed.of(stage, reason, retryable=retryable)

    def close(self) -> None:
        self.events.close()


def run_job(spec: JobSpec) -> JobOutcome:
    """Adopt ``spec.release`` into ``spec.track`` (see the module docstring). Returns
    ``JobOutcome(ok=True)``; raises ``JobFailed`` (its class says whether a retry could help)
    or ``JobLeaseLost``."""
    if spec.worker.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif spec.worker.gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.worker.gpus
    import mlflow

    from uptake.models import render_child

    render_child.prewarm()  # preflight's template render: its child imports while we fetch
    mlflow.set_tracking_uri(spec.tracking_uri)  # the eval engine's logging uses the global URI
    job = Job(spec)
    try:
        return job.run()
    finally:
        job.close()
