"""Read the run events of one release (or all) from the runs topic."""

from __future__ import annotations

from tests.core.kafka_helpers import read_topic
from uptake.events import Event, decode_event
from uptake.settings import Settings


def run_events(settings: Settings, release_id: str | None = None, expected: int = 0) -> list[Event]:
    assert settings.kafka_bootstrap is not None
    records = read_topic(settings.kafka_bootstrap, settings.kafka.topics.runs, expected, 10)
    events = [decode_event(r.value) for r in records]
    return [e for e in events if release_id is None or getattr(e, "release_id", None) == release_id]


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]
