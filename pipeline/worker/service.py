"""``uptake worker``: the consumer that turns each ``release.detected`` into track jobs.

One worker runs one job at a time (one GPU or GPU set each); more workers in the group
``uptake-pipeline`` take other partitions of the releases topic (docs/scaling.md). For each
release the worker fans out into one job per track that accepts the release's source and runs
the jobs one after the other, each in a child process (``uptake.bus.jobs.ChildJob``: its own
CUDA context, the job deadline enforced), forked from a server that imported torch,
transformers, TRL and MLflow once when the worker started (``worker.preload``; spawned afresh
without it), from a ``ThreadJob`` so the consumer keeps polling
with its partitions paused. The offset is committed only after every job of the release ended,
registered or with its failure recorded (``run.failed``), so a crash before that redelivers
the release, and the job's own idempotency (its key looked up in MLflow, its lease) makes the
redelivery resume or re-announce instead of training twice.

Static membership: the consumer joins with a ``group_instance_id`` derived from the worker's
name (the host name by default: a pod name under Kubernetes) and its GPUs, so a restarted
worker takes its partitions back without a rebalance. A rebalance can still move a busy
worker's partition (a member joining or leaving); the other member then receives the same
release, and the job's lease makes it wait rather than train the key concurrently.

The embedded Tansu broker (0.6) accepts ``group_instance_id`` but mishandles a second static
member: once one static member has joined, a member with another instance id is never
assigned a partition (measured: nothing in 90 s, while a dynamic member got its partitions
in 3 s). So membership is static against a real Kafka cluster and dynamic against the
embedded broker of ``uptake up``; ``--static-membership/--dynamic-membership`` overrides.
The lease is what prevents double training either way.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pipeline.worker import disk
from pipeline.worker.job_spec import JobSpec, spec_for
from pipeline.worker.progress_board import ProgressBoard, RunFeed
from pipeline.worker.trust import SourceRefused
from uptake.bus import EventConsumer, EventProducer, ThreadJob, ensure_topics
from uptake.bus.jobs import (
    STOP_GRACE_S,
    ChildJob,
    JobContext,
    JobOutcome,
    LongJob,
    preloaded_context,
)
from uptake.errors import ConfigError, describe_exception, one_line
from uptake.events import Event, ReleaseDetected, RunFailed
from uptake.service_runtime import on_stop_signals
from uptake.settings import Settings
from uptake.stack.local import resolved_settings
from uptake.tracks import Track

log = logging.getLogger(__name__)

GROUP = "uptake-pipeline"
PRODUCER = "uptake-worker"
NO_TRACKS = (
    "no adoption tracks configured (tracks: in the config, docs/configuration.md): "
    "the worker has nothing to adopt releases into"
)
CRASH_RETRIES = 1  # a child that died without a report (OOM kill, segfault): run it once more
_GPUS = re.compile(r"^\d+(,\d+)*$")
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

JobTarget = Callable[[JobSpec], Any]


def no_tracks_reason(settings: Settings) -> str | None:
    """Why ``uptake up`` leaves the worker out (None: it runs); a ServiceSpec ``enabled``."""
    return None if settings.tracks else NO_TRACKS


def check_tracks(settings: Settings) -> list[Track]:
    """The configured tracks; ConfigError (exit 2) when there are none or a file is missing."""
    if not settings.tracks:
        raise ConfigError(NO_TRACKS)
    for track in settings.tracks:
        if not track.recipe.is_file():
            raise ConfigError(f"track {track.name!r}: recipe {track.recipe} is not a file")
        if not (track.suite.is_file() or track.suite.is_dir()):  # JSONL, or LAB task folders
            raise ConfigError(f"track {track.name!r}: suite {track.suite} is not a file or folder")
    return list(settings.tracks)


def check_gpus(gpus: str | None) -> str | None:
    """``--gpus 0,1``; ConfigError for anything else (it becomes CUDA_VISIBLE_DEVICES)."""
    if gpus is None or gpus == "":
        return None
    if not _GPUS.fullmatch(gpus):
        raise ConfigError(f"--gpus: expected device numbers like 0 or 0,1, got {gpus!r}")
    return gpus


def instance_id(name: str | None, gpus: str | None, device: str = "auto") -> str:
    """The worker's stable identity: its name (default: the host name) and its devices.

    It is the consumer's ``group_instance_id`` (the same after a restart, so no rebalance) and
    the lease owner of its jobs. Two workers on one host need different GPUs or names.
    """
    base = name or socket.gethostname() or "worker"
    devices = f"gpu{gpus.replace(',', '-')}" if gpus else ("cpu" if device == "cpu" else "auto")
    return _INSTANCE_UNSAFE.sub("_", f"{base}-{devices}")[:200]


def static_by_default(settings: Settings) -> bool:
    """Static membership unless the broker is the embedded one ``uptake up`` started (see the
    module docstring: Tansu never assigns a second static member)."""
    from uptake.stack.local import read_stack_info

    info = read_stack_info(settings)
    embedded = info is not None and info.embedded_broker
    return not (embedded and info is not None and info.kafka_bootstrap == settings.kafka_bootstrap)


# what every job imports: the forkserver imports them once, each job forks with them loaded
PRELOAD_MODULES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "mlflow",
    "huggingface_hub",
    "pipeline.worker.job",
    "pipeline.train",
    "pipeline.train.config",
    "pipeline.train.trl_stages",
    "trl.trainer.sft_trainer",
    "pipeline.eval",
)


def default_target() -> JobTarget:
    """The job engine's entry point (loaded late: the parent never needs torch)."""
    from pipeline.worker.job import run_job

    return run_job


@dataclass
class TrackResult:
    """How one track's job of one release ended, for ``--once`` and the logs."""

    release_id: str
    track: str
    ok: bool
    reason: str | None = None
    message: str | None = None
    retryable: bool = False
    stage: str | None = None
    attempts: int = 1


class _Stopping(Exception):
    """The worker is stopping: the release stays uncommitted (redelivered, then resumed)."""


@dataclass
class WorkerStats:
    releases: int = 0
    jobs: int = 0
    failed: int = 0
    revocations: int = 0  # rebalances that took partitions from this worker (consumer stats)
    results: list[TrackResult] = field(default_factory=list)


class WorkerService:
    """The pipeline worker: consumer, fan-out and the children of one worker process."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str | None = None,
        gpus: str | None = None,
        group_id: str = GROUP,
        target: JobTarget | None = None,
        live: bool | None = None,
        static_membership: bool | None = None,
    ) -> None:
        self.settings = resolved_settings(settings)
        self.tracks = check_tracks(self.settings)
        w = self.settings.worker
        self.gpus = check_gpus(gpus) or w.gpus
        if self.gpus is not None:
            self.settings = self.settings.model_copy(
                update={"worker": w.model_copy(update={"gpus": self.gpus})}
            )
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus  # the spawned child inherits it
        elif w.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU mode: no child sees a GPU
        self.identity = instance_id(name, self.gpus, w.device)
        self.group_id = group_id
        self.static_membership = (
            static_by_default(self.settings) if static_membership is None else static_membership
        )
        self.target = target or default_target()
        self.live = live
        self.stats = WorkerStats()
        self.producer: EventProducer | None = None
        self.consumer: EventConsumer | None = None
        self._stop = threading.Event()
        self._context: JobContext | None = None

    def _job_context(self) -> JobContext | None:
        """The forkserver jobs fork from (started once, ``worker.preload``), or None: spawn."""
        if self.settings.worker.preload and self._context is None:
            self._context = preloaded_context(PRELOAD_MODULES)
        return self._context

    # -- lifecycle ---------------------------------------------------------------------------

    def _open(self) -> EventConsumer:
        self._job_context()  # the server imports while the consumer joins its group
        t = self.settings.kafka.topics
        ensure_topics(self.settings, [t.releases, t.runs, t.dlq])
        self.producer = EventProducer(self.settings, producer_name=PRODUCER)
        self.consumer = EventConsumer(
            self.settings,
            self.group_id,
            [t.releases],
            self._handle,
            accept=[ReleaseDetected],  # alert.raised shares the topic: skipped, committed
            producer=self.producer,
            max_poll_records=1,  # one job at a time: nothing fetched waits behind a job
            group_instance_id=self.identity if self.static_membership else None,
        )
        log.info(
            "worker %s in group %s (%s member) on %s: %d track(s) (%s), devices %s",
            self.identity,
            self.group_id,
            "static" if self.static_membership else "dynamic",
            t.releases,
            len(self.tracks),
            ", ".join(tr.name for tr in self.tracks),
            self.gpus or self.settings.worker.device,
        )
        return self.consumer

    def close(self) -> None:
        if self.consumer is not None:
            self.stats.revocations += self.consumer.stats.revocations
            self.consumer.close()  # not the producer: it was handed in, closed below
            self.consumer = None
        if self.producer is not None:
            self.producer.close()
            self.producer = None

    def stop(self) -> None:
        """Stop at once: a running child is stopped, its release left uncommitted."""
        self._stop.set()
        if self.consumer is not None:
            self.consumer.stop()

    def run(self, *, install_signals: bool = True) -> WorkerStats:
        """Consume until SIGTERM/SIGINT (``uptake worker``)."""
        consumer = self._open()
        if install_signals:
            on_stop_signals(self.stop)
        try:
            consumer.run(until=self._stop.is_set)
        finally:
            self.close()
        return self.stats

    def run_once(self, timeout_s: float | None = None) -> WorkerStats:
        """Handle one release event (waiting up to ``timeout_s`` for it), then return."""
        consumer = self._open()
        on_stop_signals(self.stop)
        try:
            consumer.run(
                timeout_s=timeout_s, until=lambda: self._stop.is_set() or self.stats.releases >= 1
            )
        finally:
            self.close()
        return self.stats

    # -- one release -------------------------------------------------------------------------

    def _handle(self, event: Event, _record: object) -> ThreadJob | None:
        assert isinstance(event, ReleaseDetected)
        tracks = [t for t in self.tracks if t.accepts(event.source)]
        if not tracks:
            log.info("%s: no track adopts releases of source %r", event.release_id, event.source)
            self.stats.releases += 1
            return None
        return ThreadJob(
            lambda: self._run_release(event, tracks),
            name=f"release-{event.repo_id}",
            stop_grace_s=STOP_GRACE_S + 5,  # the child gets its SIGTERM grace first
        )

    def _run_release(self, event: ReleaseDetected, tracks: list[Track]) -> None:
        """Every matching track's job, one after the other; returns when all have ended."""
        log.info(
            "%s: %d job(s): %s", event.release_id, len(tracks), ", ".join(t.name for t in tracks)
        )
        feed = _open_feed(self.settings, event.release_id)
        names = [t.name for t in tracks]
        models = {t.registered_model: t.name for t in tracks}
        with ProgressBoard(event.release_id, names, models=models, live=self.live) as board:
            try:
                for track in tracks:
                    result = self._run_track(event, track, feed, board)
                    self.stats.jobs += 1
                    self.stats.failed += 0 if result.ok else 1
                    self.stats.results.append(result)
                    board.set_state(
                        track.name,
                        "done" if result.ok else "failed",
                        "" if result.ok else result.message or "",
                    )
            finally:
                if feed is not None:
                    feed.close()
        self.stats.releases += 1

    def _run_track(
        self, event: ReleaseDetected, track: Track, feed: RunFeed | None, board: ProgressBoard
    ) -> TrackResult:
        attempt = 1
        while True:
            try:
                spec = spec_for(self.settings, event, track, worker=self.identity, attempt=attempt)
            except SourceRefused as exc:  # the event's source or endpoint is not ours: no child
                return self._failed(event, track, "fetch", str(exc), False, None)
            except (OSError, ValidationError, ValueError) as exc:  # a track file gone, say
                return self._failed(event, track, "setup", describe_exception(exc), False, None)
            if (full := disk.refusal(spec.state_dir, self.settings.worker)) is not None:
                return self._failed(event, track, "setup", full, True, spec)
            disk.note(spec, "running")
            outcome = self._run_child(spec, track, feed, board)
            disk.note(spec, "registered" if outcome.ok else "failed")
            disk.sweep(spec.state_dir, self.settings.worker)
            if outcome.ok:
                log.info("%s [%s]: job done (attempt %d)", event.release_id, track.name, attempt)
                return TrackResult(event.release_id, track.name, ok=True, attempts=attempt)
            shown = outcome.stage or board.tracks[track.name].stage
            stage = None if shown == "-" else shown
            if outcome.reason == "crashed" and attempt <= CRASH_RETRIES:
                log.warning(
                    "%s [%s]: %s; running it again (it resumes)",
                    event.release_id,
                    track.name,
                    outcome.message,
                )
                attempt += 1
                self._sleep(self.settings.worker.retry_backoff_s)
                continue
            if outcome.reason == "error":
                # the job raised: it published its run.failed itself (stage, reason, run link)
                log.error(
                    "%s [%s]: failed at %s: %s",
                    event.release_id,
                    track.name,
                    stage or "?",
                    outcome.message,
                )
                return TrackResult(
                    event.release_id,
                    track.name,
                    ok=False,
                    reason=outcome.reason,
                    message=outcome.message,
                    retryable=outcome.retryable,
                    stage=stage,
                    attempts=attempt,
                )
            # crashed again, or past its deadline: the child could not say so; we do
            result = self._failed(
                event, track, stage or "unknown", outcome.message or "", outcome.retryable, spec
            )
            result.reason, result.attempts = outcome.reason, attempt
            return result

    def _run_child(
        self, spec: JobSpec, track: Track, feed: RunFeed | None, board: ProgressBoard
    ) -> JobOutcome:
        job = LongJob(
            self.target,
            (spec,),
            name=f"job-{track.name}",
            deadline_s=self.settings.worker.job_deadline_s,
        )
        child = ChildJob(job, context=self._job_context())
        board.set_state(track.name, "running")
        log.info("%s [%s]: job started (pid %s)", spec.release.release_id, track.name, child.pid)
        while not child.done(wait_s=0.2):
            if self._stopping():
                log.warning("stopping: job %s of %s stopped", track.name, spec.release.release_id)
                child.stop()
                raise _Stopping(spec.release.release_id)
            _follow(feed, board)
        _follow(feed, board)
        return child.outcome

    def _failed(
        self,
        event: ReleaseDetected,
        track: Track,
        stage: str,
        reason: str,
        retryable: bool,
        spec: JobSpec | None,
    ) -> TrackResult:
        """Record a failure the child could not report: ``run.failed`` for the alerter."""
        reason = one_line(reason) or "job failed"
        log.error("%s [%s]: failed at %s: %s", event.release_id, track.name, stage, reason)
        failed = RunFailed(
            release_id=event.release_id,
            stage=stage,
            reason=reason,
            retryable=retryable,
            track=track.name,
            producer=PRODUCER,
        )
        try:
            assert self.producer is not None
            self.producer.publish(failed)
        except Exception as exc:  # the log line above still says it
            log.error("could not publish run.failed for %s: %s", event.release_id, exc)
        return TrackResult(
            event.release_id,
            track.name,
            ok=False,
            reason="error",
            message=reason,
            retryable=retryable,
            stage=stage,
        )

    def _stopping(self) -> bool:
        return self._stop.is_set() or (self.consumer is not None and self.consumer.stopping)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._stopping():
                raise _Stopping()
            time.sleep(min(0.1, max(end - time.monotonic(), 0)))


def _open_feed(settings: Settings, release_id: str) -> RunFeed | None:
    try:
        return RunFeed(settings, release_id)
    except Exception as exc:  # progress is a nicety: the job runs without it
        log.warning("no progress feed for %s: %s", release_id, exc)
        return None


def _follow(feed: RunFeed | None, board: ProgressBoard) -> None:
    if feed is None:
        return
    try:
        for event in feed.poll():
            board.apply(event)
    except Exception as exc:
        log.debug("progress feed: %s", exc)
