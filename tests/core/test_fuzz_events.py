"""Fuzzing ``decode_event``: whatever arrives on a topic, the only exception is EventDecodeError.

A consumer turns that error into a DLQ entry; any other exception would end its loop with the
message uncommitted, and the restarted service would read the same message and die again.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from tests.core.events_factory import one_of_each
from uptake.events import EVENT_TYPES, MAX_REASON_CHARS, Event, EventDecodeError, decode_event

FUZZ = fuzz_settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = {"invalid_json", "unknown_type", "unsupported_schema_version", "invalid_event"}
EXAMPLES = [json.loads(e.to_json()) for e in one_of_each()]

# lone surrogates too: JSON can carry "\ud800", which no UTF-8 writer can write back
texts = st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
timestamps = st.builds(
    lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(),
    st.datetimes() | st.sampled_from([datetime.min, datetime.max]),
    offsets,
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | timestamps
    | st.sampled_from(["", "1", "2026-01-01T00:00:00", "9999-12-31T23:59:59-23:59"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
)
type_names = st.sampled_from(sorted(EVENT_TYPES)) | texts | json_values
versions = st.integers(min_value=-3, max_value=5) | st.integers() | st.just(10**4000) | json_values


def _decodes_or_refuses(value: bytes | str | None) -> Event | None:
    """The property: an Event, or an EventDecodeError with a known kind and a bounded reason."""
    try:
        return decode_event(value)
    except EventDecodeError as exc:
        assert exc.kind in KINDS
        assert isinstance(exc.reason, str) and exc.reason
        assert len(exc.reason) <= MAX_REASON_CHARS + 100
        return None


def _nested(depth: int, open_: str, close: str, inner: str = "0") -> str:
    return open_ * depth + inner + close * depth


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real event with fields replaced, removed or added: the wrong shapes a writer sends."""
    data = dict(draw(st.sampled_from(EXAMPLES)))
    fields = sorted(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["replace", "drop", "add", "type", "version"]))
        if action == "replace":
            data[draw(st.sampled_from(fields))] = draw(scalars | json_values)
        elif action == "drop":
            data.pop(draw(st.sampled_from(fields)), None)
        elif action == "add":
            data[draw(texts)] = draw(json_values)
        elif action == "type":
            data["type"] = draw(type_names)
        else:
            data["schema_version"] = draw(versions)
    return data


@st.composite
def raw_texts(draw: st.DrawFn) -> str:
    """Text a JSON encoder would never write: deep nesting and over-long integers, in place."""
    data = dict(draw(st.sampled_from(EXAMPLES)))
    field = draw(st.sampled_from(sorted(data)))
    depth = draw(st.sampled_from([10, 500, 990, 995, 1_000, 5_000, 100_000]))
    bad = draw(
        st.sampled_from(
            [
                _nested(depth, "[", "]"),
                _nested(depth, '{"a":', "}"),
                "9" * draw(st.sampled_from([4_300, 4_301, 5_000])),
                "-" + "1" * 5_000,
                "1e999999",
                "NaN",
                '"\\ud800"',
                '"\\udfff\\ud800"',
            ]
        )
    )
    marker = "__FUZZ__"
    data[field] = marker
    return json.dumps(data).replace(json.dumps(marker), bad)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(value: bytes) -> None:
    _decodes_or_refuses(value)


@FUZZ
@given(json_values)
def test_arbitrary_json_documents(value: object) -> None:
    _decodes_or_refuses(json.dumps(value))


@FUZZ
@given(mutated_events())
def test_events_of_the_wrong_shape(data: dict[str, Any]) -> None:
    event = _decodes_or_refuses(json.dumps(data).encode())
    if event is not None:  # accepted: then it must survive being written again
        assert decode_event(event.to_json()) == event


EDGES = [
    datetime.max.replace(tzinfo=timezone(-timedelta(hours=23, minutes=59))).isoformat(),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=23, minutes=59))).isoformat(),
    "\ud800",
    "ok\udfff",
    10**4000,
    -(2**63) - 1,
    2**64,
    -1,
    0,
    1e308,
    float("inf"),
    float("nan"),
    "",
    [],
    {},
    True,
]


@FUZZ
@given(st.sampled_from(EXAMPLES), st.data())
def test_edge_values_in_every_field(data: dict[str, Any], draw: st.DataObject) -> None:
    field = draw.draw(st.sampled_from(sorted(data)))
    value = draw.draw(st.sampled_from(EDGES) | timestamps)
    event = _decodes_or_refuses(json.dumps({**data, field: value}))
    if event is not None:
        assert decode_event(event.to_json()) == event


@FUZZ
@given(raw_texts(), st.booleans())
def test_deep_nesting_and_huge_integers_anywhere(text: str, as_bytes: bool) -> None:
    _decodes_or_refuses(text.encode("utf-8") if as_bytes else text)


@FUZZ
@given(st.sampled_from(EXAMPLES), st.integers(min_value=1, max_value=10**6))
def test_future_schema_versions_are_refused_by_kind(data: dict[str, Any], ahead: int) -> None:
    version = EVENT_TYPES[data["type"]].SCHEMA_VERSION + ahead
    with_version = json.dumps({**data, "schema_version": version})
    try:
        decode_event(with_version)
    except EventDecodeError as exc:
        assert exc.kind == "unsupported_schema_version"
    else:
        raise AssertionError(f"schema_version {version} accepted")
