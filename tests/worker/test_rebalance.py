"""Rebalances while a job runs, on the real broker and MLflow.

- A job longer than ``max_poll_interval_ms`` (3 s here) keeps the worker in its group: no
  revocation, the job runs once, the release is committed.
- A second worker joining mid-job takes a partition from the busy one (the embedded broker
  revokes all of them) and receives the same release; the job engine's lease makes it wait
  instead of training the key too: one ``train`` stage, one model version. Which partition
  the newcomer gets is the assignor's choice, so the release is on both partitions (a
  duplicate delivery): whichever it gets, it receives the release the first one is training.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from mlflow import MlflowClient

from pipeline.worker.service import WorkerService
from tests.core.kafka_helpers import committed_offset, read_topic
from tests.worker.helpers import build_release_dir, dir_release, drops_source, make_track
from tests.worker.test_service import jobs_seen, publish, recording_job, track, with_tracks
from uptake.events import RunStage, decode_event
from uptake.settings import Settings

pytestmark = pytest.mark.slow


def test_a_job_longer_than_max_poll_interval_keeps_the_partition(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(settings, tmp_path, track(tmp_path, "slow"))
    (s.state_dir / "slow_s").write_text("8")  # > max_poll_interval_ms (3 s) twice over
    from tests.worker.test_service import release

    event = release()
    publish(s, event)
    group = f"pipeline-{s.kafka.topics.releases.split('.')[0]}"
    worker = WorkerService(s, group_id=group, target=recording_job, live=False)
    stats = worker.run_once(timeout_s=90)
    assert stats.releases == 1 and [r.ok for r in stats.results] == [True]
    assert len(jobs_seen(s)) == 1
    assert stats.revocations == 0  # never evicted while the job outlived the poll interval
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.releases, 1)
    part = next(r.partition for r in records if r.key == event.key().encode())
    assert committed_offset(s.kafka_bootstrap, group, s.kafka.topics.releases, part) == 1


def _worker_settings(stack: Settings, drops: Path, tracks: list) -> Settings:
    return stack.model_copy(
        update={
            "tracks": tracks,
            "sources": [drops_source(drops)],
            "worker": stack.worker.model_copy(
                update={
                    "device": "cpu",
                    "experiment": "uptake-rebalance-test",
                    "lease_ttl_s": 6.0,
                    "heartbeat_s": 1.0,
                    "retry_backoff_s": 0.2,
                    "progress_interval_s": 0.0,
                    "eval_batch_size": 4,
                }
            ),
        }
    )


@pytest.mark.one_backend
@pytest.mark.timeout(900)  # a real job on each of two workers (on a loaded 2-core machine)
def test_a_second_worker_joining_mid_job_waits_on_the_lease_one_version(
    stack: Settings, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('rebal')}"
    build_release_dir(drops, repo)
    event = dir_release(drops, repo)
    legal = make_track(tmp_path / "tracks", "legal", unique("uptake-legal"))
    s = _worker_settings(stack, drops, [legal])
    group = unique("pipeline")
    a = WorkerService(s, name="a", group_id=group, live=False, static_membership=False)
    b = WorkerService(s, name="b", group_id=group, live=False, static_membership=False)
    with KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all") as producer:
        for partition in (0, 1):
            producer.send(
                s.kafka.topics.releases, event.to_json(), event.key().encode(), partition=partition
            ).get(30)
    runner_a = threading.Thread(target=lambda: a.run_once(timeout_s=600), daemon=True)
    runner_a.start()
    deadline = time.monotonic() + 120
    while a.stats.jobs == 0 and time.monotonic() < deadline:  # wait until A's child trains
        stages = [
            e
            for e in map(decode_event, (r.value for r in _runs(s)))
            if isinstance(e, RunStage) and e.release_id == event.release_id
        ]
        if stages:  # A's child is at work on the key
            break
        time.sleep(1)
    assert a.stats.jobs == 0, "A finished before B could join: the test proves nothing"
    runner_b = threading.Thread(target=lambda: b.run_once(timeout_s=600), daemon=True)
    runner_b.start()
    runner_a.join(600)
    runner_b.join(600)
    assert not runner_a.is_alive() and not runner_b.is_alive()
    assert a.consumer is None and b.consumer is None
    # B got the same release while A trained it, and ended ok: it waited, then found it done
    assert [(r.release_id, r.ok) for r in a.stats.results] == [(event.release_id, True)]
    assert [(r.release_id, r.ok) for r in b.stats.results] == [(event.release_id, True)]
    trained = [
        e
        for e in map(decode_event, (r.value for r in _runs(s)))
        if isinstance(e, RunStage)
        and e.release_id == event.release_id
        and e.stage == "train"
        and e.message == "started"
    ]
    assert len(trained) == 1, "the key was trained more than once"
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    versions = client.search_model_versions(f"name = '{legal.registered_model}'")
    assert len(versions) == 1


def _runs(s: Settings) -> list:
    return read_topic(s.kafka_bootstrap, s.kafka.topics.runs, 0, timeout_s=2)
