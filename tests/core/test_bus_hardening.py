"""The bus against hostile messages and failing work, on the real embedded broker.

No message may end a consumer's loop or stall its partition: undecodable input, handler
failures of any kind, messages too large or too binary to copy, long jobs that shout, hang
or refuse. Each case ends as a bounded DLQ entry, and the next good event is handled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from kafka.errors import MessageSizeTooLargeError

from tests.core.events_factory import RID, one_of_each
from tests.core.jobs import deaf_job, failing_job, refusing_job, report_start, slow_job
from tests.core.kafka_helpers import committed_offset, read_topic
from tests.core.proc_helpers import alive
from uptake.bus import EventConsumer, EventProducer, LongJob, ensure_topics
from uptake.bus.dead_letters import MAX_RECORD_BYTES, PAYLOAD_BYTES, dead_letter
from uptake.bus.jobs import MESSAGE_CHARS, ChildJob, preloaded_context
from uptake.errors import PermanentError
from uptake.events import DeadLetter, RunStage, decode_event
from uptake.settings import Settings


def _stage(step: int) -> RunStage:
    return RunStage(release_id=RID, stage="train", step=step)


def _letters(
    settings: Settings, expected: int
) -> dict[tuple[str | None, int], tuple[DeadLetter, int]]:
    """DLQ entries by origin (key, offset), each with the size of its record (key + value)."""
    out = {}
    for r in read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, expected):
        letter = decode_event(r.value)
        assert isinstance(letter, DeadLetter)
        out[letter.origin_key, letter.origin_offset] = (letter, len(r.value) + len(r.key or b""))
    assert len(out) == expected
    return out


def _stored(letter: DeadLetter) -> bytes:
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode("utf-8")


def _release_json(**overrides: object) -> bytes:
    data = json.loads(one_of_each()[0].to_json())
    data.update(overrides)
    return json.dumps(data).encode()


def test_values_that_crashed_the_decoder_are_dead_lettered(settings: Settings) -> None:
    """100,000 "[" raised RecursionError and a 5,000-digit integer ValueError out of
    ``decode_event``: the consumer thread died with the message uncommitted, for good."""
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    poison = [
        b"[" * 100_000,
        b'{"type": "run.stage", "schema_version": 1, "step": ' + b"9" * 5_000 + b"}",
        _release_json(repo_id="\ud800"),
        _release_json(occurred_at="9999-12-31T23:59:59-23:59"),
    ]
    good = _stage(1)
    with EventProducer(settings, "test") as producer:
        offsets = [producer.send_raw(runs, RID, value) for value in poison]
        producer.publish(good)
    handled: list = []
    with EventConsumer(settings, "decoder", [runs], lambda e, r: handled.append(e)) as consumer:
        stats = consumer.run(until=lambda: bool(handled), timeout_s=30)
    assert handled == [good]
    assert stats.dead_lettered == len(poison)
    letters = _letters(settings, len(poison))
    kinds = [letters[RID, o][0].error_kind for o in offsets]
    assert kinds == ["invalid_json", "invalid_json", "invalid_event", "invalid_event"]
    partition = letters[RID, offsets[0]][0].origin_partition
    assert committed_offset(settings.kafka_bootstrap, "decoder", runs, partition) == (
        offsets[-1] + 2
    )


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even describing this fails")


def test_handler_failures_of_any_kind_are_retried_then_dead_lettered(settings: Settings) -> None:
    """Before: an exception whose str() fails escaped the loop, and one whose message held a
    lone surrogate made the DLQ write fail for ever (the partition stuck behind it)."""
    ensure_topics(settings)
    failures: dict[int, BaseException] = {
        1: RecursionError("maximum recursion depth exceeded"),
        2: MemoryError(),
        3: _Unprintable(),
        4: ValueError("bad \ud800 byte " + "x" * 1_000_000),
    }
    with EventProducer(settings, "test") as producer:
        for step in [*failures, 5]:
            producer.publish(_stage(step))
    calls: dict[int, int] = {}

    def handler(event, record):
        calls[event.step] = calls.get(event.step, 0) + 1
        if event.step in failures:
            raise failures[event.step]

    runs = settings.kafka.topics.runs
    with EventConsumer(settings, "anyfail", [runs], handler) as consumer:
        stats = consumer.run(until=lambda: 5 in calls, timeout_s=60)
    attempts = settings.kafka.max_retries + 1
    assert calls == {1: attempts, 2: attempts, 3: attempts, 4: attempts, 5: 1}
    assert stats.dead_lettered == 4 and stats.processed == 1
    letters = [letter for letter, _ in _letters(settings, 4).values()]
    errors = sorted(letter.error for letter in letters)
    assert errors[0] == "MemoryError"
    assert errors[1] == "RecursionError: maximum recursion depth exceeded"
    assert errors[2].startswith("ValueError: bad \\ud800 byte xxx") and "more chars" in errors[2]
    assert len(errors[2]) < 8_100
    assert errors[3] == "_Unprintable: <message unavailable: str() failed>"
    assert all(letter.attempts == attempts for letter in letters)


def test_permanent_handler_failures_are_dead_lettered_without_retries(settings: Settings) -> None:
    ensure_topics(settings)
    with EventProducer(settings, "test") as producer:
        for step in (1, 2, 3):
            producer.publish(_stage(step))
    calls: dict[int, int] = {}

    def handler(event, record):
        calls[event.step] = calls.get(event.step, 0) + 1
        if event.step == 1:
            raise PermanentError("model refused: needs trust_remote_code")
        if event.step == 2:
            raise MessageSizeTooLargeError("the follow-up event is 3 MB")

    runs = settings.kafka.topics.runs
    with EventConsumer(settings, "permanent", [runs], handler) as consumer:
        stats = consumer.run(until=lambda: 3 in calls, timeout_s=30)
    assert calls == {1: 1, 2: 1, 3: 1}
    assert stats.retries == 0 and stats.dead_lettered == 2
    letters = sorted(letter.error for letter, _ in _letters(settings, 2).values())
    assert letters[0].startswith("MessageSizeTooLargeError")
    assert letters[1] == "PermanentError: model refused: needs trust_remote_code"


def test_large_and_binary_messages_are_dead_lettered_within_one_record(
    settings: Settings,
) -> None:
    """Before: the whole value was copied JSON-escaped (200 KB of control bytes became
    1.2 MB), the DLQ write failed and the consumer rewound to the same message for ever."""
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    binary = os.urandom(2 * 1024 * 1024)
    control = bytes(range(1, 32)) * (200_000 // 31)
    long_key = "k" * 5_000
    good = _stage(1)
    with EventProducer(settings, "big", max_request_bytes=4 * 1024 * 1024) as producer:
        binary_at = producer.send_raw(runs, RID, binary)
        control_at = producer.send_raw(runs, RID, control)
        key_at = producer.send_raw(runs, long_key, b"{not json")
        producer.publish(good)
    handled: list = []
    with EventConsumer(settings, "bigdlq", [runs], lambda e, r: handled.append(e)) as consumer:
        stats = consumer.run(until=lambda: bool(handled), timeout_s=60)
    assert handled == [good]
    assert stats.dead_lettered == 3 and stats.dead_letter_failures == 0
    letters = _letters(settings, 3)
    assert all(size <= MAX_RECORD_BYTES for _, size in letters.values())
    for offset, original, encoding in [
        (binary_at, binary, "base64"),
        (control_at, control, "utf-8"),
    ]:
        letter, _ = letters[RID, offset]
        assert letter.payload_encoding == encoding
        assert letter.payload_size == len(original) and letter.payload_truncated
        assert letter.payload_sha256 == hashlib.sha256(original).hexdigest()
        stored = _stored(letter)
        assert len(stored) == PAYLOAD_BYTES and original.startswith(stored)
    keyed, _ = letters["k" * 1024, key_at]
    assert keyed.origin_key == "k" * 1024 and keyed.origin_key_truncated
    assert keyed.payload == "{not json" and not keyed.payload_truncated


def test_a_dlq_that_refuses_a_letter_as_too_large_gets_it_without_payload(
    settings: Settings,
) -> None:
    """A too-large error never gets better with retries: the letter is resent slimmer."""
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    control = b"\x01" * 200_000  # its 64 KiB prefix is 384 KiB once JSON-escaped
    with EventProducer(settings, "test") as producer:
        offset = producer.send_raw(runs, RID, control)
        producer.publish(_stage(1))
    handled: list = []
    with (
        EventProducer(settings, "small", max_request_bytes=100_000) as small_dlq,
        EventConsumer(
            settings, "slim", [runs], lambda e, r: handled.append(e), producer=small_dlq
        ) as consumer,
    ):
        stats = consumer.run(until=lambda: bool(handled), timeout_s=30)
    assert len(handled) == 1
    assert stats.payloads_omitted == 1 and stats.dead_letter_failures == 0
    (letter, size) = _letters(settings, 1)[RID, offset]
    assert size < 100_000
    assert letter.payload == "" and letter.payload_encoding == "omitted"
    assert letter.payload_size == 200_000 and letter.payload_truncated
    assert letter.payload_sha256 == hashlib.sha256(control).hexdigest()


def test_worst_case_dead_letter_fits_one_record() -> None:
    """Every field at its most expensive once JSON-escaped still fits in 1 MiB."""
    from kafka.consumer.fetcher import ConsumerRecord

    record = ConsumerRecord(
        topic="t" * 249,
        partition=0,
        leader_epoch=-1,
        offset=2**62,
        timestamp=0,
        timestamp_type=0,
        key=b"\xff" * 100_000,
        value=b"\x00" * (5 * 1024 * 1024),
        headers=[],
        checksum=None,
        serialized_key_size=100_000,
        serialized_value_size=5 * 1024 * 1024,
        serialized_header_size=-1,
    )
    reason = "\ud800\x00\U0001f600" * 1_000_000
    letter = dead_letter(record, "g\x00" * 10_000, "k\x00" * 10_000, reason, 10**6)
    value, key = letter.to_json(), letter.key().encode("utf-8")
    assert len(value) + len(key) < MAX_RECORD_BYTES // 2
    assert letter.payload_size == 5 * 1024 * 1024 and len(_stored(letter)) == PAYLOAD_BYTES


# -- long jobs ---------------------------------------------------------------------------------


def _wait_done(child: ChildJob, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.done(wait_s=0.1):
            return True
    return False


def test_a_child_with_a_1_mb_error_message_finishes_and_is_reported_truncated() -> None:
    """Before: the child blocked writing its report into the full pipe while the parent
    waited for it to exit: a deadlock with the partitions paused."""
    child = ChildJob(LongJob(failing_job, ("x" * 1_000_000,), name="loud"))
    try:
        assert _wait_done(child, 60), "the child never finished: deadlocked on its pipe"
    finally:
        child.stop(grace_s=1)
    outcome = child.outcome
    assert not outcome.ok and outcome.reason == "error" and outcome.truncated
    assert outcome.message.startswith("RuntimeError: xxx") and "more chars" in outcome.message
    assert len(outcome.message) <= MESSAGE_CHARS + 50
    assert outcome.retryable  # an untyped exception keeps the old default: retried


def test_a_forkserver_child_has_the_preload_and_the_callers_environment_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``preloaded_context``: the job forks from a server that imported torch once, yet sees
    an env var set after the server started (a token, CUDA_VISIBLE_DEVICES); spawning
    imports nothing ahead."""
    ctx = preloaded_context(["torch"])
    monkeypatch.setenv("UPTAKE_TEST_LATE_VAR", "set-after-the-server")
    facts = {}
    for name, context in (("forked", ctx), ("spawned", None)):
        out = tmp_path / f"{name}.json"
        child = ChildJob(LongJob(report_start, (str(out), "UPTAKE_TEST_LATE_VAR")), context=context)
        try:
            assert _wait_done(child, 120)
        finally:
            child.stop(grace_s=1)
        assert child.outcome.ok, child.outcome
        facts[name] = json.loads(out.read_text())
    assert facts["forked"]["var"] == facts["spawned"]["var"] == "set-after-the-server"
    assert facts["forked"]["torch"] and not facts["spawned"]["torch"]
    assert facts["forked"]["ppid"] != os.getpid() == facts["spawned"]["ppid"]


def test_a_forkserver_child_killed_by_a_signal_is_reported_crashed(tmp_path: Path) -> None:
    marker = tmp_path / "slow.log"
    child = ChildJob(LongJob(slow_job, (str(marker), 600.0)), context=preloaded_context(["torch"]))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert time.monotonic() < deadline and not child.done(wait_s=0.1)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        assert _wait_done(child, 30)
    finally:
        child.stop(grace_s=1)
    assert child.outcome.reason == "crashed" and "signal 9" in (child.outcome.message or "")


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    marker = tmp_path / "deaf.log"
    job = LongJob(deaf_job, (str(marker), 600.0), name="deaf", deadline_s=10.0)
    child = ChildJob(job, grace_s=1.0)
    try:
        while not marker.exists():  # SIGTERM is ignored from here on
            assert not child.done(wait_s=0.1), "the child ended before it started its work"
        assert _wait_done(child, 60)
    finally:
        child.stop(grace_s=1)
    outcome = child.outcome
    assert outcome.reason == "deadline" and not outcome.retryable
    assert outcome.message == (
        "deadline: deaf ran past its 10 s deadline and was killed (1 s after SIGTERM)"
    )
    assert "done" not in marker.read_text()


def test_a_long_job_past_its_deadline_is_stopped_and_failed_with_reason_deadline(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    with EventProducer(settings, "test") as producer:
        producer.publish(_stage(1))
        producer.publish(_stage(2))
    marker = tmp_path / "job.log"
    calls: list[int] = []
    # past the poll deadline too: the consumer keeps polling while it stops the child
    deadline_s = settings.kafka.max_poll_interval_ms / 1000 * 1.5

    def handler(event, record):
        calls.append(event.step)
        if event.step == 1:
            return LongJob(slow_job, (str(marker), 600.0), name="train", deadline_s=deadline_s)
        return None

    runs = settings.kafka.topics.runs
    with EventConsumer(settings, "deadline", [runs], handler) as consumer:
        start = time.monotonic()
        stats = replace(consumer.run(until=lambda: 2 in calls, timeout_s=60))
        elapsed = time.monotonic() - start  # (a copy: leaving the group counts a revocation)
    assert calls == [1, 2]  # not retried: the deadline is permanent
    assert deadline_s <= elapsed < deadline_s + 30
    assert stats.revocations == 0 and stats.dead_lettered == 1 and stats.processed == 1
    [(letter, _)] = _letters(settings, 1).values()
    assert letter.error_kind == "job_failed" and letter.attempts == 1
    assert letter.error.startswith("deadline: train ran past its")
    child = int(marker.read_text().split()[1])
    assert not alive({child}, set())
    assert "done" not in marker.read_text()


@pytest.mark.parametrize("permanent", [True, False], ids=["refusal", "untyped"])
def test_a_refused_long_job_is_not_retried(settings: Settings, permanent: bool) -> None:
    ensure_topics(settings)
    with EventProducer(settings, "test") as producer:
        producer.publish(_stage(1))
    calls: list[int] = []

    def handler(event, record):
        calls.append(event.step)
        if permanent:
            return LongJob(refusing_job, ("model refused: license not allowed",))
        return LongJob(failing_job, ("CUDA out of memory",))

    runs = settings.kafka.topics.runs
    with EventConsumer(settings, "refusal", [runs], handler) as consumer:
        stats = consumer.run(max_messages=1, timeout_s=60)
    [(letter, _)] = _letters(settings, 1).values()
    if permanent:
        assert calls == [1] and stats.retries == 0 and letter.attempts == 1
        assert letter.error == "uptake.errors.PermanentError: model refused: license not allowed"
    else:
        attempts = settings.kafka.max_retries + 1
        assert len(calls) == attempts and letter.attempts == attempts
        assert letter.error == "RuntimeError: CUDA out of memory"
