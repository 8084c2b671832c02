"""What the worker shows while a job runs: the child's own ``run.*`` events, read back.

The job's child publishes ``run.stage`` (step/total, tokens/s, ETA) on the runs topic; the
worker reads that topic from where it stood when the job started (manual assignment, no
group: reading it commits nothing and never rebalances anyone) and keeps one ``TrackProgress``
per track. On a terminal that becomes a rich Live table; in a log (compose, ``uptake up``) one
line per stage change, so the log says where a job was when it stopped. The last stage seen
is also what the worker puts in a ``run.failed`` when the child died without saying so.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from kafka import KafkaConsumer, TopicPartition

from uptake.events import (
    CandidateRegistered,
    EventDecodeError,
    RunEvent,
    RunFailed,
    RunStage,
    RunStarted,
    decode_event,
)
from uptake.settings import Settings

if TYPE_CHECKING:  # rich is imported only when a live board is drawn
    from rich.live import Live
    from rich.table import Table

log = logging.getLogger(__name__)


@dataclass
class TrackProgress:
    """Where one track's job of the current release stands."""

    track: str
    state: str = "waiting"  # waiting | running | registered | failed
    stage: str = "-"
    step: int | None = None
    total_steps: int | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    detail: str = ""

    def progress(self) -> str:
        if self.step is None or not self.total_steps:
            return "-"
        return f"{self.step}/{self.total_steps} ({100 * self.step / self.total_steps:.0f}%)"

    def eta(self) -> str:
        if self.eta_s is None:
            return "-"
        minutes, seconds = divmod(int(self.eta_s), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class RunFeed:
    """The ``run.*`` events of one release, from the runs topic's end at construction on."""

    def __init__(self, settings: Settings, release_id: str) -> None:
        self.release_id = release_id
        topic = settings.kafka.topics.runs
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{settings.kafka.client_id}-worker-feed",
            enable_auto_commit=False,
            group_id=None,
        )
        parts = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now: the child must not publish before them
            self._consumer.position(tp)

    def poll(self, timeout_ms: int = 0) -> list[RunEvent]:
        out: list[RunEvent] = []
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                try:
                    event = decode_event(record.value)
                except EventDecodeError:
                    continue  # the runs topic's owner (the promoter) dead-letters it
                if isinstance(event, RunEvent) and event.release_id == self.release_id:
                    out.append(event)
        return out

    def close(self) -> None:
        self._consumer.close()


class ProgressBoard:
    """Every track of the release being handled, updated from its events."""

    def __init__(
        self,
        release_id: str,
        tracks: list[str],
        *,
        models: dict[str, str] | None = None,
        live: bool | None = None,
    ) -> None:
        self.release_id = release_id
        self.tracks = {t: TrackProgress(t) for t in tracks}
        # registered model -> track: candidate.registered names the model, not the track
        self.models = models or {}
        self.live_enabled = sys.stdout.isatty() if live is None else live
        self._live: Live | None = None

    def apply(self, event: RunEvent) -> None:
        track = getattr(event, "track", None)
        if isinstance(event, CandidateRegistered):
            track = self.models.get(event.registered_model)
        row = self.tracks.get(track) if track else None
        if row is None:
            return
        if isinstance(event, RunStarted):
            row.state = "running"
        elif isinstance(event, RunStage):
            if event.stage != row.stage:
                log.info("%s [%s]: stage %s", self.release_id, row.track, event.stage)
            row.state, row.stage = "running", event.stage
            row.step, row.total_steps = event.step, event.total_steps
            row.tokens_per_s, row.eta_s = event.tokens_per_s, event.eta_s
            row.detail = event.message or ""
        elif isinstance(event, RunFailed):
            row.state, row.stage, row.detail = "failed", event.stage, event.reason
        elif isinstance(event, CandidateRegistered):
            row.state, row.stage = "registered", "register"
            row.detail = f"{event.registered_model} v{event.version}"
        self.refresh()

    def set_state(self, track: str, state: str, detail: str = "") -> None:
        row = self.tracks[track]
        row.state, row.detail = state, detail or row.detail
        self.refresh()

    def table(self) -> Table:
        from rich.table import Table

        table = Table(title=f"uptake worker: {self.release_id}")
        for col in ("track", "state", "stage", "progress", "tokens/s", "ETA", "detail"):
            table.add_column(col)
        for row in self.tracks.values():
            rate = f"{row.tokens_per_s:.0f}" if row.tokens_per_s else "-"
            table.add_row(
                row.track, row.state, row.stage, row.progress(), rate, row.eta(), row.detail[:80]
            )
        return table

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.table())

    def __enter__(self) -> ProgressBoard:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(self.table(), refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self.table())
            self._live.stop()
            self._live = None
