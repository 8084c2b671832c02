"""Event contracts: JSON round trip, keys, and the decode errors the bus routes to the DLQ."""

from __future__ import annotations

import json

import pytest

from tests.core.events_factory import RID, one_of_each
from uptake.events import EVENT_TYPES, EventDecodeError, ReleaseDetected, RunStage, decode_event


def test_every_registered_type_has_an_example() -> None:
    assert {e.type for e in one_of_each()} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_json_round_trip(event) -> None:
    decoded = decode_event(event.to_json())
    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.occurred_at.utcoffset().total_seconds() == 0


def test_keys_follow_design() -> None:
    keys = {e.type: e.key() for e in one_of_each()}
    assert keys["release.detected"] == "acme/base-7b"
    assert keys["run.started"] == keys["candidate.registered"] == RID
    assert keys["promotion.decided"] == keys["champion.changed"] == "uptake-legal"
    assert keys["dead.letter"] == "k"


def _release(**overrides) -> bytes:
    data = json.loads(one_of_each()[0].to_json())
    data.update(overrides)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (b"{not json", "invalid_json", "invalid JSON"),
        (b"\xff\xfe", "invalid_json", "invalid JSON"),
        (None, "invalid_json", "tombstone"),
        (b"[1, 2]", "invalid_event", "JSON object"),
        (_release(type="release.exploded"), "unknown_type", "release.exploded"),
        (_release(schema_version=2), "unsupported_schema_version", "newer than supported"),
        (_release(schema_version="1"), "invalid_event", "schema_version"),
        (_release(revision=None), "invalid_event", "revision"),
        (_release(surprise=1), "invalid_event", "surprise: unknown field"),
    ],
)
def test_untrusted_messages_raise_typed_errors(value, kind, fragment) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(value)
    assert info.value.kind == kind
    assert fragment in info.value.reason


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_number_that_is_not_finite_is_refused(value: str) -> None:
    """Python's json reads these bare tokens; an event holding one would not survive its own
    round trip (pydantic writes null), so it is malformed."""
    stage = RunStage(release_id="hf:acme/m@1", stage="train", loss=1.0).to_json()
    with pytest.raises(EventDecodeError) as info:
        decode_event(stage.replace(b'"loss":1.0', f'"loss":{value}'.encode()))
    assert info.value.kind == "invalid_event" and "loss" in info.value.reason


def test_naive_timestamps_are_refused_and_aware_ones_normalised() -> None:
    with pytest.raises(EventDecodeError, match="occurred_at"):
        decode_event(_release(occurred_at="2026-01-01T00:00:00"))
    event = decode_event(_release(occurred_at="2026-01-01T02:00:00+02:00"))
    assert isinstance(event, ReleaseDetected)
    assert event.occurred_at.isoformat() == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (b"[" * 100_000, "invalid_json", "nested too deeply"),
        (b'{"type": "run.stage", "step": ' + b"9" * 5_000 + b"}", "invalid_json", "4300 digits"),
        (_release(repo_id="\ud800"), "invalid_event", "not encodable"),
        (_release(occurred_at="9999-12-31T23:59:59-23:59"), "invalid_event", "out of range"),
        (_release(schema_version=10**4000), "unsupported_schema_version", "more chars"),
    ],
    ids=["deep-nesting", "huge-int", "lone-surrogate", "date-overflow", "huge-version"],
)
def test_hostile_values_are_decode_errors_not_crashes(value, kind, fragment) -> None:
    """Each of these used to escape as RecursionError/ValueError/OverflowError (or, for the
    surrogate, be accepted and then break every later write of the event, the DLQ's too)."""
    with pytest.raises(EventDecodeError) as info:
        decode_event(value)
    assert info.value.kind == kind
    assert fragment in info.value.reason
    assert len(info.value.reason) < 2_100


def test_version_1_dead_letters_still_decode() -> None:
    """Letters written before the bounded payload fields (version 2) stay readable."""
    letter = next(e for e in one_of_each() if e.type == "dead.letter")
    data = json.loads(letter.to_json())
    assert data["schema_version"] == 2
    for name in [n for n in data if n.startswith("payload_")] + ["origin_key_truncated"]:
        del data[name]
    old = decode_event(json.dumps({**data, "schema_version": 1}))
    assert old.payload == letter.payload and old.payload_size is None
    assert old.payload_encoding == "utf-8" and not old.payload_truncated
