"""The Kafka bus against the real embedded broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from tests.core.events_factory import RID, one_of_each
from tests.core.jobs import crashing_job, failing_job, slow_job
from tests.core.kafka_helpers import committed_offset, read_topic
from tests.core.proc_helpers import alive
from uptake.bus import EventConsumer, EventProducer, LongJob, ensure_topics, topic_for
from uptake.events import DeadLetter, RunStage, decode_event
from uptake.settings import Settings


def _stage(step: int) -> RunStage:
    return RunStage(release_id=RID, stage="train", step=step)


def _published(settings: Settings, event: RunStage) -> RunStage:
    with EventProducer(settings, "test") as producer:
        producer.publish(event)
    return event


def test_ensure_topics_creates_once(settings: Settings) -> None:
    created = ensure_topics(settings)
    assert sorted(created) == sorted(settings.kafka.topics.model_dump().values())
    assert ensure_topics(settings) == []
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        for topic in created:
            assert len(consumer.partitions_for_topic(topic)) == settings.kafka.partitions
    finally:
        consumer.close()


def test_keyed_round_trip_of_every_event_type(settings: Settings) -> None:
    ensure_topics(settings)
    events = one_of_each()
    with EventProducer(settings, "test") as producer:
        for event in events:
            producer.publish(event)
    topics = sorted({topic_for(settings, e) for e in events})
    seen: dict[str, tuple] = {}

    def handler(event, record):
        seen[event.event_id] = (event, record.key.decode(), record.topic)

    with EventConsumer(settings, "roundtrip", topics, handler) as consumer:
        consumer.run(until=lambda: len(seen) == len(events), timeout_s=30)
    assert len(seen) == len(events)
    for event in events:
        got, key, topic = seen[event.event_id]
        assert got == event
        assert key == event.key()
        assert topic == topic_for(settings, event)


def test_poison_messages_go_to_dlq_and_consumer_keeps_going(settings: Settings) -> None:
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    good = _stage(1)
    newer = json.loads(_stage(2).to_json())
    newer["schema_version"] = 99
    poison = [
        (b"{not json", "invalid_json"),
        (
            json.dumps({**newer, "type": "run.exploded", "schema_version": 1}).encode(),
            "unknown_type",
        ),
        (json.dumps(newer).encode(), "unsupported_schema_version"),
    ]
    with EventProducer(settings, "test") as producer:
        offsets = [producer.send_raw(runs, RID, value) for value, _ in poison]
        producer.publish(good)
    handled = []
    with EventConsumer(settings, "poison", [runs], lambda e, r: handled.append(e)) as consumer:
        stats = consumer.run(until=lambda: bool(handled), timeout_s=30)
    assert handled == [good]
    assert stats.dead_lettered == 3
    letters = [
        decode_event(r.value)
        for r in read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 3)
    ]
    assert len(letters) == 3
    by_offset = {dl.origin_offset: dl for dl in letters}
    for offset, (value, kind) in zip(offsets, poison, strict=True):
        letter = by_offset[offset]
        assert isinstance(letter, DeadLetter)
        assert letter.origin_topic == runs
        assert letter.error_kind == kind
        assert letter.consumer_group == "poison"
        assert letter.origin_key == RID
        assert letter.payload == value.decode("utf-8", errors="replace")
    # all four committed: a restart would not see them again
    partition = letters[0].origin_partition
    assert committed_offset(settings.kafka_bootstrap, "poison", runs, partition) == offsets[-1] + 2


def test_handler_errors_retry_then_dead_letter(settings: Settings) -> None:
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    with EventProducer(settings, "test") as producer:
        producer.publish(_stage(1))
        producer.publish(_stage(2))
    calls: dict[int, int] = {}

    def handler(event, record):
        calls[event.step] = calls.get(event.step, 0) + 1
        if event.step == 1:
            raise RuntimeError("database is down")
        if calls[event.step] == 1:
            raise TimeoutError("flaky once")

    with EventConsumer(settings, "retries", [runs], handler) as consumer:
        stats = consumer.run(max_messages=2, timeout_s=30)
    attempts = settings.kafka.max_retries + 1
    assert calls == {1: attempts, 2: 2}
    assert stats.processed == 1 and stats.dead_lettered == 1
    [letter] = [
        decode_event(r.value)
        for r in read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 1)
    ]
    assert letter.error_kind == "handler_error"
    assert letter.error == "RuntimeError: database is down"
    assert letter.attempts == attempts


def test_unaccepted_event_types_are_skipped_not_dead_lettered(settings: Settings) -> None:
    ensure_topics(settings)
    failed = one_of_each()[3]
    with EventProducer(settings, "test") as producer:
        producer.publish(_stage(1))
        producer.publish(failed)
    got = []
    with EventConsumer(
        settings,
        "accept",
        [settings.kafka.topics.runs],
        lambda e, r: got.append(e),
        accept=[type(failed)],
    ) as consumer:
        stats = consumer.run(max_messages=2, timeout_s=30)
    assert got == [failed]
    assert stats.skipped == 1 and stats.dead_lettered == 0


def test_long_job_outlives_max_poll_interval_without_rebalance(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    marker = tmp_path / "job.log"
    job_s = settings.kafka.max_poll_interval_ms / 1000 * 2.5  # well past the poll deadline
    event = _published(settings, _stage(1))
    calls = []

    def handler(ev, record):
        calls.append((ev.event_id, record.partition, record.offset))
        return LongJob(slow_job, (str(marker), job_s), name="train")

    runs = settings.kafka.topics.runs
    with EventConsumer(settings, "longjob", [runs], handler) as consumer:
        start = time.monotonic()
        consumer.run(max_messages=1, timeout_s=60)
        elapsed = time.monotonic() - start
        # keep consuming a while: a redelivery after an eviction would show up now
        consumer.run(timeout_s=settings.kafka.max_poll_interval_ms / 1000 + 2)
        stats = replace(consumer.stats)
    assert elapsed >= job_s
    assert [c[0] for c in calls] == [event.event_id]
    assert marker.read_text().count("start") == 1 and "done" in marker.read_text()
    assert stats.revocations == 0
    assert stats.processed == 1 and stats.long_jobs == 1
    _, partition, offset = calls[0]
    assert committed_offset(settings.kafka_bootstrap, "longjob", runs, partition) == offset + 1


def test_failing_long_jobs_are_retried_then_dead_lettered(settings: Settings) -> None:
    ensure_topics(settings)
    with EventProducer(settings, "test") as producer:
        producer.publish(_stage(1))
        producer.publish(_stage(2))
    jobs = {1: LongJob(failing_job, ("CUDA out of memory",)), 2: LongJob(crashing_job)}
    with EventConsumer(
        settings, "jobfail", [settings.kafka.topics.runs], lambda e, r: jobs[e.step]
    ) as consumer:
        stats = consumer.run(max_messages=2, timeout_s=60)
    assert stats.dead_lettered == 2
    letters = {
        decode_event(r.value).error
        for r in read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 2)
    }
    assert letters == {"RuntimeError: CUDA out of memory", "job process exited with code 7"}


def _consumer_process(settings: Settings, group: str, marker: Path, block: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "UPTAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "UPTAKE_KAFKA__TOPICS__RUNS": settings.kafka.topics.runs,
        "UPTAKE_KAFKA__TOPICS__DLQ": settings.kafka.topics.dlq,
        "UPTAKE_KAFKA__MAX_POLL_INTERVAL_MS": str(settings.kafka.max_poll_interval_ms),
        "UPTAKE_KAFKA__SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms),
        "UPTAKE_HOME": str(marker.parent),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.core.jobs", group, str(marker), block],
        env=env,
        cwd=Path(__file__).parents[2],
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lines(path: Path, n: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(lines := path.read_text().splitlines()) >= n:
            return lines
        time.sleep(0.1)
    return path.read_text().splitlines() if path.exists() else []


def test_consumer_killed_before_commit_gets_message_again(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    event = _published(settings, _stage(1))
    marker = tmp_path / "seen.log"
    first = _consumer_process(settings, "crashy", marker, "forever")
    try:
        assert len(_wait_for_lines(marker, 1, 40)) == 1
    finally:
        first.kill()
        first.wait()
    second = _consumer_process(settings, "crashy", marker, "no")
    try:
        lines = _wait_for_lines(marker, 2, 60)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    assert [line.split()[0] for line in lines] == [event.event_id, event.event_id]
    assert second.returncode == 0, err
    assert "consumer stopped cleanly" in err


def test_sigterm_stops_an_idle_consumer_gracefully(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    marker = tmp_path / "seen.log"
    proc = _consumer_process(settings, "graceful", marker, "no")
    ready = Path(str(marker) + ".ready")
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "consumer stopped cleanly" in err


def test_sigterm_during_a_long_job_stops_its_child_and_leaves_the_message(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    event = _published(settings, _stage(1))
    marker = tmp_path / "seen.log"
    job_log = Path(str(marker) + ".job")
    proc = _consumer_process(settings, "sigterm-job", marker, "job")
    try:
        (started,) = _wait_for_lines(job_log, 1, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "consumer stopped cleanly" in err
    child = int(started.split()[1])
    deadline = time.monotonic() + 10
    while alive({child}, set()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive({child}, set()), "the job's child outlived the consumer"
    assert job_log.read_text().splitlines() == [started]  # stopped, never finished
    runs = settings.kafka.topics.runs  # this test's own topic: the event is its only message
    committed = {
        committed_offset(settings.kafka_bootstrap, "sigterm-job", runs, p)
        for p in range(settings.kafka.partitions)
    }
    assert committed <= {None, 0}  # nothing committed: the next owner redoes the job

    again = _consumer_process(settings, "sigterm-job", marker, "no")
    try:
        lines = _wait_for_lines(marker, 2, 60)
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=30)
    assert [line.split()[0] for line in lines] == [event.event_id, event.event_id]


def test_control_blocking_handler_past_poll_interval_is_evicted_and_redelivered(
    settings: Settings,
) -> None:
    """Why LongJob exists: the same work done inline loses the group and runs twice."""
    ensure_topics(settings)
    event = _published(settings, _stage(1))
    calls = []
    block_s = settings.kafka.max_poll_interval_ms / 1000 * 2.5

    def blocking(ev, record):
        calls.append(ev.event_id)
        if len(calls) == 1:
            time.sleep(block_s)

    with EventConsumer(settings, "blocking", [settings.kafka.topics.runs], blocking) as consumer:
        consumer.run(until=lambda: len(calls) >= 2, timeout_s=block_s + 30)
    assert calls == [event.event_id, event.event_id]


def test_bystander_consumer_skips_undecodable_without_dead_lettering(settings: Settings) -> None:
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    good = _stage(1)
    with EventProducer(settings, "test") as producer:
        producer.send_raw(runs, RID, b"{not json")
        producer.publish(good)
    handled = []
    with EventConsumer(
        settings,
        "bystander",
        [runs],
        lambda e, r: handled.append(e),
        dead_letter_undecodable=False,
    ) as consumer:
        stats = consumer.run(max_messages=2, timeout_s=30)
    assert handled == [good]
    assert stats.skipped == 1 and stats.dead_lettered == 0
    assert read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 0, timeout_s=2) == []


def test_a_failing_dlq_write_keeps_the_message_and_the_consumer(settings: Settings) -> None:
    ensure_topics(settings)
    runs = settings.kafka.topics.runs
    with EventProducer(settings, "test") as producer:
        offset = producer.send_raw(runs, RID, b"{not json")
        producer.publish(_stage(1))
    # the consumer's own producer cannot write its DLQ (a misnamed topic: rejected at once)
    topics = settings.kafka.topics.model_copy(update={"dlq": "no such topic!"})
    broken = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topics": topics})}
    )
    handled: list = []
    with (
        EventProducer(broken, "broken") as dlq_down,
        EventConsumer(
            settings, "dlq-down", [runs], lambda e, r: handled.append(e), producer=dlq_down
        ) as consumer,
    ):
        stats = consumer.run(timeout_s=6)  # returns: the loop did not die with the DLQ
    assert stats.dead_letter_failures >= 2 and stats.dead_lettered == 0
    assert handled == []  # nothing behind the poison message was committed past it either
    letters = read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 0, timeout_s=2)
    assert letters == []

    # the DLQ is back: the same group picks the message up again, dead-letters it, goes on
    with EventConsumer(settings, "dlq-down", [runs], lambda e, r: handled.append(e)) as consumer:
        stats = consumer.run(until=lambda: bool(handled), timeout_s=30)
    assert stats.dead_lettered == 1
    assert [(e.type, e.step) for e in handled] == [("run.stage", 1)]
    (letter,) = [
        decode_event(r.value)
        for r in read_topic(settings.kafka_bootstrap, settings.kafka.topics.dlq, 1)
    ]
    assert isinstance(letter, DeadLetter) and letter.origin_offset == offset
    partition = letter.origin_partition
    assert committed_offset(settings.kafka_bootstrap, "dlq-down", runs, partition) == offset + 2
