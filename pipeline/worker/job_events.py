"""The job's own events on ``uptake.runs``: started, stage progress, failed, registered.

``JobEvents`` publishes from inside the job's child with its own acknowledged producer; stage
progress is throttled (``interval_s``) so a fast training loop does not flood the topic, while
a stage's first and last update always go out. ``failure_event`` is also what the service
publishes for a child that died without a word (killed, out of memory, past its deadline).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from pipeline.worker.job_spec import JobSpec
from uptake.errors import one_line
from uptake.events import Event, RunFailed, RunStage, RunStarted
from uptake.urls import redact_userinfo

log = logging.getLogger(__name__)
PRODUCER = "pipeline-worker"


def finite_or_none(value: Any) -> Any:
    """A float that is NaN or infinite (a diverged loss, an ETA before the first step) as
    unknown: events carry finite numbers only."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def failure_event(
    spec: JobSpec,
    stage: str,
    reason: str,
    *,
    retryable: bool,
    run_id: str | None = None,
    run_url: str | None = None,
) -> RunFailed:
    """The ``run.failed`` of ``spec``'s job: stage, one-line reason, track and run link."""
    return RunFailed(
        producer=PRODUCER,
        release_id=spec.release.release_id,
        run_id=run_id,
        stage=stage,
        reason=one_line(reason),
        retryable=retryable,
        track=spec.track.name,
        run_url=redact_userinfo(run_url) if run_url else None,  # the bus carries no password
        attempts=spec.attempt,
    )


class JobEvents:
    """Publishes one job's events; ``publish`` waits for the broker's acknowledgement."""

    def __init__(self, spec: JobSpec, producer: Any | None = None) -> None:
        self.spec = spec
        self.run_id: str | None = None
        self._producer = producer
        self._last: dict[str, float] = {}

    def _open(self) -> Any:
        if self._producer is None:
            from uptake.bus import EventProducer
            from uptake.settings import KafkaSettings, Settings

            settings = Settings(
                home=self.spec.state_dir,
                kafka_bootstrap=self.spec.kafka_bootstrap,
                kafka=KafkaSettings(topics=self.spec.topics, client_id=self.spec.client_id),
            )
            self._producer = EventProducer(settings, PRODUCER)
        return self._producer

    def publish(self, event: Event) -> None:
        self._open().publish(event)

    def started(self) -> None:
        r = self.spec.release
        self.publish(
            RunStarted(
                producer=PRODUCER,
                release_id=r.release_id,
                run_id=self.run_id,
                base_model=r.repo_id,
                base_revision=r.revision,
                worker=self.spec.identity,
                attempt=self.spec.attempt,
                track=self.spec.track.name,
            )
        )

    def stage(self, stage: str, *, force: bool = False, **fields: Any) -> None:
        """A ``run.stage`` update; dropped when the last one of ``stage`` was too recent."""
        now = time.monotonic()
        if not force and now - self._last.get(stage, -1e9) < self.spec.worker.progress_interval_s:
            return
        self._last[stage] = now
        event = RunStage(
            producer=PRODUCER,
            release_id=self.spec.release.release_id,
            run_id=self.run_id,
            stage=stage,
            track=self.spec.track.name,
            **{k: finite_or_none(v) for k, v in fields.items()},
        )
        try:
            self.publish(event)
        except Exception as exc:  # progress is best effort; the job's outcome is not
            log.warning("run.stage not published: %s", exc)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close()
            except Exception as exc:
                log.warning("closing the event producer: %s", exc)
            self._producer = None
