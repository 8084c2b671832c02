"""Follow the bus: every release's progress, read from the events the services publish.

The live view needs to show where each release is *now*; the events are the fast path for
that (MLflow stays the truth for the final numbers). The follower reads the releases, runs and
decisions topics from the beginning with manual assignment (no consumer group: it must not take
partitions from the services) and folds each event into one ``Progress`` per release.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from pydantic import BaseModel

from uptake.events import (
    CandidateRegistered,
    ChampionChanged,
    Event,
    EventDecodeError,
    PromotionDecided,
    ReleaseDetected,
    RunFailed,
    RunStage,
    RunStarted,
    decode_event,
)
from uptake.settings import Settings

log = logging.getLogger(__name__)


class Progress(BaseModel):
    """Where one release is: the latest thing the bus said about it."""

    release_id: str
    repo_id: str
    detected_at: datetime | None = None
    status: str = "detected"  # detected, running, registered, promoted, rejected, ...
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    eta_s: float | None = None
    run_id: str | None = None
    version: str | None = None
    reason: str | None = None  # the gate's reason, or why the run failed
    failed: bool = False


class BusState(BaseModel):
    releases: dict[str, Progress] = {}  # release id -> progress
    champion: str | None = None  # version, from champion.changed
    events: int = 0

    def by_repo(self, repo_id: str) -> Progress | None:
        found = [p for p in self.releases.values() if p.repo_id == repo_id]
        return found[-1] if found else None

    def apply(self, event: Event, registered_model: str) -> None:
        self.events += 1
        if isinstance(event, ReleaseDetected):
            self.releases.setdefault(
                event.release_id,
                Progress(
                    release_id=event.release_id,
                    repo_id=event.repo_id,
                    detected_at=event.occurred_at,
                ),
            )
            return
        if isinstance(event, ChampionChanged | PromotionDecided):
            if event.registered_model != registered_model:
                return
            if isinstance(event, ChampionChanged):
                self.champion = event.version
                return
        release_id = getattr(event, "release_id", None)
        p = self.releases.get(release_id) if release_id else None
        if p is None:
            return
        if isinstance(event, RunStarted):
            p.status, p.run_id = "running", event.run_id or p.run_id
        elif isinstance(event, RunStage):
            if p.status in ("detected", "running"):
                p.status = "running"
            p.stage, p.step, p.total_steps, p.eta_s = (
                event.stage,
                event.step,
                event.total_steps,
                event.eta_s,
            )
            p.run_id = event.run_id or p.run_id
        elif isinstance(event, RunFailed):
            if event.retryable:
                p.reason = f"retrying after {event.stage}: {event.reason}"
            else:
                p.status, p.failed, p.stage = "failed", True, event.stage
                p.reason = event.reason
        elif isinstance(event, CandidateRegistered):
            p.status, p.version, p.stage = "registered", event.version, "register"
            p.run_id = event.run_id or p.run_id
        elif isinstance(event, PromotionDecided):
            p.version = event.version
            p.status = {"pending_approval": "pending approval"}.get(event.outcome, event.outcome)
            p.reason = event.reason


class BusFollower:
    """A background thread folding the topics into a ``BusState`` (read under ``lock``)."""

    def __init__(self, settings: Settings, bootstrap: str, registered_model: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.registered_model = registered_model
        self.state = BusState()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-follow", daemon=True)
        self.error: str | None = None

    def start(self) -> BusFollower:
        self._thread.start()
        return self

    def snapshot(self) -> BusState:
        with self.lock:
            return self.state.model_copy(deep=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        topics = self.settings.kafka.topics
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id="uptake-demo",
                group_id=None,
                enable_auto_commit=False,
                request_timeout_ms=self.settings.kafka.request_timeout_ms,
            )
        except Exception as exc:  # the broker went away before we could read it
            self.error = f"cannot read the bus at {self.bootstrap}: {exc}"
            return
        try:
            parts = []
            for topic in (topics.releases, topics.runs, topics.decisions):
                for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                    parts.append(TopicPartition(topic, partition))
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=300)
                for records in batches.values():
                    for record in records:
                        self._fold(record.value)
        except Exception as exc:  # shown in the view; the demo reads MLflow for its result
            self.error = f"lost the bus: {exc}"
            log.warning("demo follower: %s", exc)
        finally:
            consumer.close()

    def _fold(self, value: bytes | None) -> None:
        try:
            event = decode_event(value)
        except EventDecodeError:
            return  # not ours to judge: the services dead-letter what they cannot read
        with self.lock:
            self.state.apply(event, self.registered_model)
