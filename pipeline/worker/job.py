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

from pipeline.train.launch import needs_launch
from pipeline.train.recipe import halved_batch
from pipeline.worker.failures import (
    JobFailed,
    PermanentJobFailure,
    StageTimeout,
    as_disk_full,
    is_oom,
    is_permanent,
    is_transient,
)
from pipeline.worker.fetch import fetch_release
from pipeline.worker.job_events import JobEvents, failure_event
from pipeline.worker.job_spec import JobKey, JobSpec, job_key
from pipeline.worker.launched_train import LaunchedTraining
from pipeline.worker.lease import JobLeaseLost, Lease, read_lease
from pipeline.worker.register import event_of_version, register_candidate, versions_of_key
from pipeline.worker.runs import canonical_run, mark_stage, run_url
from pipeline.worker.stages import Rate, cached_baseline, evaluate, holdout
from pipeline.worker.tags import (
    ATTEMPT_TAG,
    BASELINE_CACHED_TAG,
    FAILURE_RETRYABLE_TAG,
    FAILURE_TAG,
    FETCH_CACHED_TAG,
    OOM_RETRY_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    STAGE_TAG,
)
from uptake.bus.jobs import JobOutcome
from uptake.errors import is_retryable, one_line
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASE_MODEL_TAG,
    BASE_REVISION_TAG,
    BASELINE_PREFIX,
    CHALLENGER_ALIAS,
    CRITERION_PASS_RATE,
    RECIPE_SHA_TAG,
    RELEASE_ID_TAG,
    SUITE_SHA_TAG,
    TRACK_TAG,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SCORE_TAG_PREFIX = "uptake.score."  # scores on the model version, for people in the UI
CANDIDATE_RESULTS = "candidate_results.jsonl"


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
    def __init__(self, spec: JobSpec, events: JobEvents | None = None) -> None:
        from mlflow import MlflowClient

        self.spec = spec
        self.key: JobKey | None = None
        self.client = MlflowClient(tracking_uri=spec.tracking_uri, registry_uri=spec.tracking_uri)
        self.events = events or JobEvents(spec)
        self.run_id: str | None = None
        self.exp_id: str | None = None
        self.stage = "fetch"
        self.lease: Lease | None = None
        self.started = time.monotonic()
        self.work_dir: Path | None = None

    # -- helpers -------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        if self.run_id is None or self.exp_id is None:
            return None
        return run_url(self.spec.tracking_uri, self.exp_id, self.run_id)

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on transient errors with doubling backoff."""
        delay = self.spec.retry_backoff_s
        for attempt in range(self.spec.transient_retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc) or attempt >= self.spec.transient_retries:
                    raise
                log.warning(
                    "%s failed (attempt %d/%d), retrying in %.1fs: %s",
                    what,
                    attempt + 1,
                    self.spec.transient_retries + 1,
                    delay,
                    exc,
                )
                time.sleep(delay)
                delay = min(delay * 2, self.spec.retry_backoff_max_s)
        raise AssertionError("unreachable")

    def run_stage(self, stage: str, fn: Callable[[], T]) -> T:
        """One stage: fence the lease, tag start and end, publish progress, retry, time out."""
        self.stage = stage
        if self.lease is not None:
            self.retrying("lease check", self.lease.fence)
        rid = self.run_id
        assert rid is not None
        self.retrying("stage tag", lambda: mark_stage(self.client, rid, stage, "started"))
        self.events.stage(stage, force=True, message="started")
        with stage_timer(self.spec.stage_timeout_s, stage):
            value = self.retrying(stage, fn)
        self.retrying("stage tag", lambda: mark_stage(self.client, rid, stage, "ended"))
        self.events.stage(stage, force=True, message="done")
        return value

    def reemit(self, version: Any) -> JobOutcome:
        if not self._registration_finished(version):
            # the version was created, then the job died before the alias and the run's tags:
            # it was never announced, so finish its registration as the dead job would have
            log.warning("%s: finishing the registration of version %s", self.key, version.version)
            self.client.set_registered_model_alias(
                version.name, CHALLENGER_ALIAS, str(version.version)
            )
            self._mark_registered(version)
        elif self.client.get_run(version.run_id).info.status != "FINISHED":
            self.client.set_terminated(version.run_id, "FINISHED")
        event = event_of_version(self.client, version, self.events_producer_name)
        self.events.publish(event)
        log.info("%s already registered as version %s; re-published", self.key, version.version)
        return JobOutcome(ok=True)

    events_producer_name = "pipeline-worker"

    def _registration_finished(self, version: Any) -> bool:
        """Whether the version's run records its registration as done. While another worker's
        live lease holds the run, that worker is finishing it right now: wait (up to two
        lease terms) instead of racing it. A live lease in this worker's own name is a dead
        earlier attempt (a worker runs one job at a time)."""
        deadline = time.monotonic() + 2 * self.spec.lease_ttl_s
        while True:
            if REGISTERED_VERSION_TAG in self.client.get_run(version.run_id).data.tags:
                return True
            holder = read_lease(self.client, version.run_id)
            if not holder.live() or holder.owner == self.spec.worker:
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(min(self.spec.heartbeat_s, 0.5))

    def registered(self) -> Any | None:
        assert self.key is not None
        found = versions_of_key(self.client, self.spec.track.registered_model, self.key.digest)
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
        self.key = key = job_key(spec)
        run = self.retrying("MLflow lookup", lambda: canonical_run(self.client, spec, key))
        self.run_id, self.exp_id = run.info.run_id, run.info.experiment_id
        self.events.run_id = self.run_id
        if (version := self.retrying("MLflow lookup", self.registered)) is not None:
            return self.reemit(version)
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
        assert self.run_id is not None
        lease = Lease(
            self.client, self.run_id, self.spec.worker, self.spec.lease_ttl_s, self.spec.heartbeat_s
        )
        deadline = self.started + self.spec.job_deadline_s
        while (holder := self.retrying("lease", lease.try_acquire)) is not None:
            if self.retrying("MLflow lookup", self.registered) is not None:
                return False
            if time.monotonic() >= deadline:
                raise JobLeaseLost(
                    f"{self.key}: leased by {holder.owner} for longer than the job's deadline"
                )
            log.info("run %s is leased by %s; waiting", self.run_id, holder.owner)
            time.sleep(min(self.spec.heartbeat_s, max(0.2, holder.expires_at - time.time())))
        # the holder may have registered and released between our last look and the take
        if self.retrying("MLflow lookup", self.registered) is not None:
            lease.release()
            return False
        self.lease = lease
        lease.start()
        return True

    def _stages(self) -> JobOutcome:
        from pipeline.eval import load_results, load_suite, log_to_mlflow, save_results
        from pipeline.train import load_recipe, preflight
        from pipeline.train.mlflow_log import log_refusal

        spec, client, rid = self.spec, self.client, self.run_id
        assert rid is not None and self.key is not None
        run = client.get_run(rid)
        if run.info.status != "RUNNING":
            client.update_run(rid, status="RUNNING")
        for tag in (FAILURE_TAG, FAILURE_RETRYABLE_TAG):
            if tag in run.data.tags:
                client.delete_tag(rid, tag)
        client.set_tag(rid, ATTEMPT_TAG, str(spec.attempt))
        self.events.started()
        self.work_dir = work = spec.state_dir / "jobs" / self.key.digest[:32]
        work.mkdir(parents=True, exist_ok=True)

        model_dir, fetched = self.run_stage(
            "fetch",
            lambda: fetch_release(
                spec.release, spec.state_dir, source=spec.source, allowlist=spec.allowlist
            ),
        )
        client.set_tag(rid, FETCH_CACHED_TAG, str(not fetched).lower())
        self.stage = "preflight"  # a bad recipe or suite fails there
        profile = "cpu" if spec.device == "cpu" else None
        recipe = load_recipe(spec.track.recipe).resolve(profile)
        suite = load_suite(spec.track.suite)

        def check() -> None:
            report = preflight(model_dir, recipe, spec.allowlist, repo_id=spec.release.repo_id)
            if report.refusals:
                log_refusal(report, recipe, run_id=rid, tracking_uri=spec.tracking_uri)
                reasons = "; ".join(f"{r.check}: {r.reason}" for r in report.refusals)
                raise PermanentJobFailure("preflight", f"model refused: {reasons}")

        self.run_stage("preflight", check)
        self.run_stage("holdout", lambda: holdout(recipe, suite))
        baseline, computed = self.run_stage(
            "baseline",
            lambda: cached_baseline(spec, model_dir, suite, self._eval_progress("baseline")),
        )
        client.set_tag(rid, BASELINE_CACHED_TAG, str(not computed).lower())
        trained_dir = self.run_stage("train", lambda: self._train(model_dir, recipe, work))

        def score() -> dict[str, float]:
            cached = work / CANDIDATE_RESULTS
            if cached.is_file():
                result = load_results(cached)
            else:
                result = evaluate(spec, trained_dir, suite, self._eval_progress("evaluate"))
                save_results(result, cached.with_suffix(".partial"))
                cached.with_suffix(".partial").replace(cached)
            return log_to_mlflow(result, baseline, run_id=rid, price=spec.eval_price())

        metrics = self.run_stage("evaluate", score)
        self.run_stage("register", lambda: self._register(metrics))
        return JobOutcome(ok=True)

    def _eval_progress(self, stage: str) -> Callable[[str, int, int], None]:
        rate = Rate()

        def hook(part: str, done: int, total: int) -> None:
            if part != "generate":
                return
            self.events.stage(
                stage,
                step=done,
                total_steps=total,
                eta_s=rate.eta(done, total),
                message="generating",
                force=done == total,
            )

        return hook

    def _train(self, model_dir: Path, recipe: Any, work: Path) -> Path:
        from pipeline.train import train_and_log

        spec = self.spec
        rid = self.run_id
        assert rid is not None
        rate = Rate()

        def progress(p: Any) -> None:
            self.events.stage(
                "train",
                step=p.step,
                total_steps=p.total_steps,
                loss=p.loss,
                tokens_per_s=p.tokens_per_s or None,
                eta_s=rate.eta(p.step, p.total_steps),
                message=p.stage,
                force=p.step == p.total_steps,
            )
            if self.lease is not None and self.lease.lost.is_set():
                raise JobLeaseLost(f"lease on run {rid} lost mid-training")

        def attempt(halve: bool) -> Path:
            if needs_launch(recipe.hardware.num_processes):  # several GPUs: accelerate's ranks
                return LaunchedTraining(
                    num_processes=recipe.hardware.num_processes,
                    model_dir=model_dir,
                    recipe=spec.track.recipe,
                    profile=recipe.profile,
                    out_dir=work / "train",
                    run_id=rid,
                    tracking_uri=spec.tracking_uri,
                    allowlist=tuple(spec.allowlist),
                    repo_id=spec.release.repo_id,
                    halve_batch=halve,
                ).run(progress)
            outcome = train_and_log(
                model_dir,
                halved_batch(recipe)[0] if halve else recipe,
                work / "train",
                tracking_uri=spec.tracking_uri,
                run_id=rid,
                experiment=spec.experiment,
                allowlist=spec.allowlist,
                repo_id=spec.release.repo_id,
                resume=True,
                on_progress=progress,
            )
            if outcome.status == "refused" or outcome.result is None:
                raise PermanentJobFailure("train", f"model refused: {outcome.reason}")
            return Path(outcome.result.model_dir)

        try:
            return attempt(halve=False)
        except Exception as exc:
            if not is_oom(exc):
                raise
            note = halved_batch(recipe)[1]
            log.warning("out of memory in training; retrying once with %s", note)
            self.client.set_tag(rid, OOM_RETRY_TAG, note)
            self._free_accelerator()
            return attempt(halve=True)

    @staticmethod
    def _free_accelerator() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _register(self, metrics: dict[str, float]) -> Any:
        spec, key, rid = self.spec, self.key, self.run_id
        assert key is not None and rid is not None
        release = spec.release
        tags = {
            RELEASE_ID_TAG: release.release_id,
            TRACK_TAG: spec.track.name,
            BASE_MODEL_TAG: release.repo_id,
            BASE_REVISION_TAG: release.revision,
            RECIPE_SHA_TAG: key.recipe_sha,
            SUITE_SHA_TAG: key.suite_sha,
        }
        for name in (ALL_PASS_RATE, CRITERION_PASS_RATE):
            for prefix in ("", BASELINE_PREFIX):
                if prefix + name in metrics:
                    tags[f"{SCORE_TAG_PREFIX}{prefix}{name}"] = f"{metrics[prefix + name]:.6f}"
        if self.lease is not None:
            self.lease.fence()  # right before the write that must happen once
        version, _created = register_candidate(
            self.client, spec.track.registered_model, rid, key.digest, tags
        )
        self._mark_registered(version)
        self.events.publish(event_of_version(self.client, version, self.events_producer_name))
        return version

    def _mark_registered(self, version: Any) -> None:
        """The run's last writes: which version it became, then FINISHED (``reemit`` reads the
        version tag to tell a finished registration from one a crash cut short)."""
        from mlflow.entities import RunTag

        tags = [
            RunTag(REGISTERED_MODEL_TAG, version.name),
            RunTag(REGISTERED_VERSION_TAG, str(version.version)),
        ]
        self.client.log_batch(version.run_id, tags=tags)
        self.client.set_terminated(version.run_id, "FINISHED")

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
                self.client.set_tag(rid, STAGE_TAG, stage)
                self.client.set_tag(rid, FAILURE_TAG, reason[:4000])
                self.client.set_tag(rid, FAILURE_RETRYABLE_TAG, str(retryable).lower())
                self.client.set_terminated(rid, "FAILED")
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
    if spec.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif spec.gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.gpus
    import mlflow

    from uptake.models import render_child

    render_child.prewarm()  # preflight's template render: its child imports while we fetch
    mlflow.set_tracking_uri(spec.tracking_uri)  # the eval engine's logging uses the global URI
    job = Job(spec)
    try:
        return job.run()
    finally:
        job.close()
