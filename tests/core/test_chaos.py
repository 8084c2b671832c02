"""Chaos: 1,000 bad messages against a real ``uptake up``, and nothing falls over.

A producer floods every uptake topic with what a careless or hostile writer could put there:
nesting 100,000 deep, integers of 5,000 digits, 2 MB of random bytes, unknown types, future
schema versions, valid JSON of the wrong shape, tombstones, binary keys. Then:

- every component keeps its pid and has no restart in ``stack.json``;
- each bad message on ``uptake.runs`` (the promoter's topic) is in the DLQ exactly once,
  found by its origin topic/partition/offset, and every DLQ record is at most 1 MiB;
- each bad message on the topics the alerter only reads (releases, decisions, the DLQ
  itself) is skipped with its reason in the promoter's log (their owners, the pipeline
  worker and serving, are not part of the local stack);
- valid events sent after the storm are handled: a ``champion.changed`` reaches on-call as a
  ``promoted`` alert, and a ``candidate.registered`` for a model uptake does not manage is
  refused at once and dead-lettered with that reason;
- on-call gets one notification per dead-letter group (consumer group, topic, error kind),
  a handful in all, while the state store counted every dead letter into its group;
- no consumer was evicted for a slow poll loop (no duplicates, no poll-timeout warning).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.core.cli_helpers import ROOT, clean_env, run_uptake, uptake_argv
from tests.registry.helpers import Endpoint
from uptake.bus.dead_letters import MAX_RECORD_BYTES
from uptake.events import (
    CandidateRegistered,
    ChampionChanged,
    DeadLetter,
    EventDecodeError,
    decode_event,
    release_id,
)
from uptake.services import SERVICES
from uptake.stack.process import free_port

pytestmark = pytest.mark.slow

TOPICS = {"uptake.runs": 400, "uptake.releases": 200, "uptake.decisions": 200, "uptake.dlq": 200}
PROMOTER_GROUP = "uptake-promoter"
PARTITIONS = 3
RID = release_id("hf", "chaos/base", "0" * 40)


def _event_like(rng: random.Random, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"chaos-{rng.getrandbits(64):x}",
        "type": "candidate.registered",
        "schema_version": 1,
        "occurred_at": "2025-01-01T00:00:00+00:00",
        "release_id": RID,
        "registered_model": "uptake-legal",
        "version": "1",
        "model_uri": "models:/uptake-legal/1",
    }
    base.update(fields)
    return base


def _j(data: Any) -> bytes:
    return json.dumps(data).encode()


# Each maker gives one bad value; the 2 MB one is rare (the broker keeps it in memory).
MAKERS: list[Callable[[random.Random], bytes | None]] = [
    lambda r: b"[" * 100_000,
    lambda r: b'{"a":' * 20_000,
    lambda r: (
        b'{"type": "candidate.registered", "schema_version": 1, "version": ' + b"9" * 5_000 + b"}"
    ),
    lambda r: b"-" + b"1" * 5_000,
    lambda r: os.urandom(r.randint(1, 4_000)),
    lambda r: _j(_event_like(r, type=r.choice(["release.exploded", "", "x" * 300, None, 7]))),
    lambda r: _j(_event_like(r, schema_version=r.choice([2, 99, 2**40]))),
    lambda r: _j(_event_like(r, type="champion.changed", schema_version=1_000)),
    lambda r: _j(r.choice([[1, 2, 3], "candidate.registered", 42, None, True, []])),
    lambda r: _j(_event_like(r, version={"nested": ["wrong", "shape"]})),
    lambda r: _j(_event_like(r, schema_version=r.choice([0, -1, True, "1", 1.5]))),
    lambda r: _j({"type": "candidate.registered", "schema_version": 1}),  # fields missing
    lambda r: _j(_event_like(r, surprise="extra field")),
    lambda r: _j(_event_like(r, registered_model="\ud800")),  # a lone surrogate
    lambda r: b'{"type": "candidate.registered", "version": "\xff\xfe"}',  # not UTF-8
    lambda r: b"\x00" * r.randint(1, 20_000),
    lambda r: None,  # a tombstone
]


def _bad_messages(rng: random.Random) -> list[tuple[str, int, bytes | None, bytes | None]]:
    """(topic, partition, key, value) for every bad message, 2 MB binaries included."""
    out = []
    for topic, n in TOPICS.items():
        for i in range(n):
            if i == 0:  # one per topic: kafka-python checksums in pure Python
                value: bytes | None = os.urandom(2 * 1024 * 1024)
            elif i == 1:  # control bytes: 6 bytes each once JSON-escaped in the letter
                value = bytes(range(1, 32)) * 6_500
            else:
                value = MAKERS[i % len(MAKERS)](rng)
            key = rng.choice([None, b"k", os.urandom(16), b"K" * 5_000])
            if value is None and key is None:  # Kafka needs one of them
                key = b"tombstone"
            out.append((topic, i % PARTITIONS, key, value))
    rng.shuffle(out)
    return out


def _produce(bootstrap: str, messages: list) -> dict[tuple[str, int, int], bytes | None]:
    """Send everything in batches, flush once; return the origin of each message."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        futures = [
            (producer.send(topic, key=key, value=value, partition=p), value)
            for topic, p, key, value in messages
        ]
        producer.flush(timeout=120)
        sent = {}
        for future, value in futures:
            meta = future.get(timeout=60)
            sent[meta.topic, meta.partition, meta.offset] = value
        return sent
    finally:
        producer.close(timeout=10)


def _send_events(bootstrap: str, *events: Any) -> dict[str, tuple[int, int]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        out = {}
        for topic, event in events:
            meta = producer.send(topic, key=event.key().encode(), value=event.to_json()).get(30)
            out[event.event_id] = (meta.partition, meta.offset)
        return out
    finally:
        producer.close(timeout=10)


class DlqReader:
    """Reads the DLQ from the beginning, keeping every record's size."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition("uptake.dlq", p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.letters: list[DeadLetter] = []
        self.max_size = 0
        self.foreign = 0  # our own bad records on the DLQ topic

    def read(self, until: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not until() and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=500, max_records=500).values():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except EventDecodeError:
                        self.foreign += 1
                        continue
                    assert isinstance(event, DeadLetter), event
                    size = len(record.value) + len(record.key or b"")
                    self.max_size = max(self.max_size, size)
                    self.letters.append(event)

    def close(self) -> None:
        self.consumer.close()


def _committed(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, partition))
    finally:
        consumer.close()


def _wait(what: str, check: Callable[[], Any], timeout_s: float, proc: subprocess.Popen) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "uptake up ended"
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _components(home: Path) -> dict[str, dict]:
    return json.loads((home / "stack.json").read_text())["processes"]


def test_a_thousand_bad_messages_leave_the_stack_up_and_on_call_paged_a_few_times(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    home = tmp_path / "home"
    config = tmp_path / "uptake.yaml"
    with Endpoint() as oncall:
        config.write_text(
            json.dumps(
                {
                    "alerts": {
                        "channels": {"oncall": {"type": "webhook", "url": oncall.url}},
                        "grouping": {
                            "dead_letter": {
                                "group_wait_s": 2,
                                "group_interval_s": 600,
                                "resolve_after_s": 600,
                            }
                        },
                    }
                }
            )
        )
        env = {
            "UPTAKE_KAFKA__EMBEDDED_PORT": str(free_port()),
            "UPTAKE_MLFLOW__PORT": str(free_port()),
            "UPTAKE_CONFIG": str(config),
        }
        up_log = tmp_path / "up.log"
        with up_log.open("w") as out:
            proc = subprocess.Popen(
                uptake_argv("up"),
                env=clean_env(home, **env),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _run_chaos(proc, home, env, oncall, started)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print(f"chaos: {time.monotonic() - started:.0f}s in all")


def _run_chaos(
    proc: subprocess.Popen, home: Path, env: dict[str, str], oncall: Endpoint, started: float
) -> None:
    names = {"broker", "mlflow", *(s.name for s in SERVICES if s.enabled is None)}

    def ready() -> dict | None:
        status = run_uptake("status", "--json", "--timeout", "2", home=home, **env)
        report = json.loads(status.stdout)
        ok = status.returncode == 0 and set(report["local_stack"]) == names
        return report if ok else None

    report = _wait("uptake up", ready, 240, proc)
    bootstrap = json.loads((home / "stack.json").read_text())["kafka_bootstrap"]
    before = _components(home)
    promoter_log = home / "logs" / "promoter.log"
    # the alerter has joined its group (it starts on the topics' beginning either way)
    _wait("the alerter", lambda: "alert channel oncall" in promoter_log.read_text(), 60, proc)
    up_at = time.monotonic()

    sent = _produce(bootstrap, _bad_messages(random.Random(10)))
    produced_s = time.monotonic() - up_at
    assert len(sent) == sum(TOPICS.values())
    on_runs = {k for k in sent if k[0] == "uptake.runs"}

    # valid events after the storm: one for the promoter, one for the alerter
    candidate = CandidateRegistered(
        release_id=RID,
        registered_model="chaos-unknown-model",
        version="1",
        model_uri="models:/chaos-unknown-model/1",
        suite_sha="ab" * 32,
        all_pass_rate=0.9,
        criterion_pass_rate=0.9,
    )
    champion = ChampionChanged(
        registered_model="chaos-model", version="7", model_uri="models:/chaos-model/7"
    )
    valid = _send_events(bootstrap, ("uptake.runs", candidate), ("uptake.decisions", champion))

    dlq = DlqReader(bootstrap)
    try:

        def from_storm() -> set[tuple[str, int, int]]:
            return {
                (d.origin_topic, d.origin_partition, d.origin_offset)
                for d in dlq.letters
                if d.consumer_group == PROMOTER_GROUP
            } & on_runs

        dlq.read(until=lambda: from_storm() >= on_runs, timeout_s=150)
        cand_p, cand_at = valid[candidate.event_id]
        # the promoter got past the candidate: committed (decided, refused, or dead-lettered)
        _wait(
            "the promoter to commit past the valid candidate",
            lambda: (_committed(bootstrap, PROMOTER_GROUP, "uptake.runs", cand_p) or 0) > cand_at,
            90,
            proc,
        )
        dlq.read(until=lambda: False, timeout_s=2)  # the candidate's letter, if it has one
    finally:
        dlq.close()

    missing = on_runs - from_storm()
    assert not missing, f"{len(missing)} bad messages on uptake.runs never reached the DLQ"
    ours = [d for d in dlq.letters if d.consumer_group == PROMOTER_GROUP]
    per_origin = Counter((d.origin_topic, d.origin_partition, d.origin_offset) for d in ours)
    assert max(per_origin.values()) == 1, "a message was dead-lettered twice (redelivered)"
    assert all(d.error and d.error_kind for d in ours)
    assert dlq.max_size <= MAX_RECORD_BYTES
    assert dlq.foreign == TOPICS["uptake.dlq"]
    for d in ours:
        value = sent.get((d.origin_topic, d.origin_partition, d.origin_offset))
        if (d.origin_topic, d.origin_partition, d.origin_offset) in on_runs:
            assert d.payload_size == (len(value) if value is not None else None)

    # the topics only the alerter reads: skipped, each with its reason in the log
    skipped_re = re.compile(r"undecodable message (\S+)\[(\d+)\]@(\d+): (.+)")
    others = {k for k in sent if k[0] != "uptake.runs"}

    def skipped() -> set[tuple[str, int, int]]:
        found = set()
        for m in skipped_re.finditer(promoter_log.read_text(errors="replace")):
            if m.group(4).strip():
                found.add((m.group(1), int(m.group(2)), int(m.group(3))))
        return found

    _wait("the alerter to skip every bad message", lambda: skipped() >= others, 90, proc)

    # the valid champion.changed, sent after the storm, reached on-call
    def promoted() -> list[dict]:
        return [b for b in oncall.bodies() if b["alert"]["event_id"] == champion.event_id]

    _wait("the promoted alert", promoted, 60, proc)
    assert promoted()[0]["alert"]["kind"] == "promoted"

    # one notification per dead-letter group; the state store counted every letter
    groups = Counter(
        f"uptake/dead_letter/{d.consumer_group}/{d.origin_topic}/{d.error_kind}"
        for d in dlq.letters
    )

    def notified() -> set[str]:
        return {
            b["alert"]["dedup_key"] for b in oncall.bodies() if b["alert"]["kind"] == "dead_letter"
        }

    def counted() -> dict[str, int]:
        db = sqlite3.connect(f"file:{home / 'registry' / 'registry.db'}?mode=ro", uri=True)
        try:
            rows = dict(db.execute("SELECT group_key, count FROM alert_groups").fetchall())
        finally:
            db.close()
        return {k: rows.get(k, 0) for k in groups}

    _wait("every dead letter counted in its group", lambda: counted() == dict(groups), 90, proc)
    _wait("a notification for each dead-letter group", lambda: notified() >= set(groups), 30, proc)
    deliveries = oncall.bodies()
    dead_letter_notices = [b for b in deliveries if b["alert"]["kind"] == "dead_letter"]
    assert len(dead_letter_notices) == len(groups) <= 6
    assert len(deliveries) <= 10, [b["alert"]["summary"] for b in deliveries]

    # nothing died, restarted or was evicted
    after = _components(home)
    for name in before:
        assert after[name]["pid"] == before[name]["pid"], f"{name} was restarted"
        assert after[name]["restarts"] == 0 and after[name]["state"] == "running"
    final = ready()
    assert final is not None and final["healthy"]
    text = promoter_log.read_text(errors="replace")
    assert "Consumer poll timeout has expired" not in text
    assert "partition no longer assigned" not in text
    assert "Traceback" not in text
    # the valid candidate names a model uptake does not manage: refused at once, with why
    refused = [d for d in ours if (d.origin_topic, d.origin_offset) == ("uptake.runs", cand_at)]
    refused = [d for d in refused if d.origin_partition == cand_p]
    assert len(refused) == 1 and refused[0].attempts == 1
    assert "not managed by uptake" in refused[0].error
    print(
        f"chaos: the valid candidate: {refused[0].error}; "
        f"sent {len(sent)} in {produced_s:.1f}s; DLQ letters {len(dlq.letters)} "
        f"(max {dlq.max_size} bytes); skipped {len(others)}; groups {dict(groups)}; "
        f"deliveries {len(deliveries)}; up after {up_at - started:.0f}s; "
        f"storm handled in {time.monotonic() - up_at:.0f}s; report healthy={report['healthy']}"
    )
