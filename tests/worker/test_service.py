"""The worker's consumer machinery on the real broker, with small job functions of its own.

The job engine (``run_job``) has its own tests (test_job_*.py); here the jobs only say what
they saw (their pid, CUDA_VISIBLE_DEVICES, their spec) and succeed, refuse, crash or take a
while, so fan-out, child isolation, failure recording, commits and stopping are checked in
seconds. The job functions live at module level: the children are spawned, not forked.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.worker.job_spec import JobSpec
from pipeline.worker.service import WorkerService, instance_id
from tests.core.kafka_helpers import committed_offset, read_topic
from uptake.bus import EventProducer, ensure_topics
from uptake.errors import ConfigError, PermanentError
from uptake.events import AlertRaised, ReleaseDetected, RunFailed, decode_event, release_id
from uptake.settings import Settings
from uptake.tracks import Track
from uptake.watcher_config import DirSourceConfig, HfSourceConfig


def recording_job(spec: JobSpec) -> None:
    """Append what the child saw; behave as the track's name says."""
    line = {
        "track": spec.track.name,
        "release": spec.release.release_id,
        "pid": os.getpid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": spec.worker.gpus,
        "worker": spec.identity,
        "attempt": spec.attempt,
        "at": time.time(),
    }
    with (spec.state_dir / "jobs.jsonl").open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    if spec.track.name.startswith("refuse"):
        raise PermanentError("requires trust_remote_code (refused)")
    if spec.track.name.startswith("crash"):
        os._exit(9)
    if spec.track.name.startswith("flaky") and spec.attempt < 3:
        raise ConnectionError("the hub answered 503")  # retryable, as an outage is
    if spec.track.name.startswith("slow"):
        time.sleep(float((spec.state_dir / "slow_s").read_text()))


def jobs_seen(settings: Settings) -> list[dict]:
    path = settings.state_dir / "jobs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def track(root: Path, name: str, sources: tuple[str, ...] | None = None) -> Track:
    d = root / "tracks" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "recipe.yaml").write_text(f"name: {name}\n")
    (d / "suite.jsonl").write_text("{}\n")
    return Track(
        name=name,
        registered_model=f"uptake-{name}",
        recipe=d / "recipe.yaml",
        suite=d / "suite.jsonl",
        sources=sources,
    )


def release(source: str = "hub", repo: str = "acme/tiny", revision: str = "r1") -> ReleaseDetected:
    rid = release_id(source, repo, revision)
    return ReleaseDetected(release_id=rid, source=source, repo_id=repo, revision=revision)


def configured_sources(tmp_path: Path) -> list[HfSourceConfig | DirSourceConfig]:
    """The sources the releases of these tests name: the worker refuses any other."""
    (tmp_path / "drops").mkdir(exist_ok=True)
    return [
        HfSourceConfig(name="hub", kind="hf", authors=["acme"]),
        DirSourceConfig(name="drops", kind="dir", path=tmp_path / "drops"),
    ]


def with_tracks(settings: Settings, tmp_path: Path, *tracks: Track, **worker) -> Settings:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings)
    return settings.model_copy(
        update={
            "tracks": list(tracks),
            "sources": configured_sources(tmp_path),
            "worker": settings.worker.model_copy(update={"device": "cpu", **worker}),
        }
    )


def publish(settings: Settings, *events) -> None:
    with EventProducer(settings, "test") as producer:
        for event in events:
            producer.publish(event)


def group(settings: Settings) -> str:
    """One consumer group per test: a member a test left behind never delays the next."""
    return f"pipeline-{settings.kafka.topics.releases.split('.')[0]}"


def service(settings: Settings, static: bool = False, **kw) -> WorkerService:
    return WorkerService(
        settings,
        group_id=group(settings),
        target=recording_job,
        live=False,
        static_membership=static,
        **kw,
    )


def test_a_release_fans_out_to_the_tracks_that_accept_its_source_each_in_its_own_child(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(
        settings,
        tmp_path,
        track(tmp_path, "legal"),
        track(tmp_path, "firm-a", sources=("hub",)),
        track(tmp_path, "firm-b", sources=("drops",)),
    )
    event = release("hub")
    alert = AlertRaised(component="watcher", condition="source_failing", summary="x")
    publish(s, alert, event)  # alert.raised shares the topic (same key partition or not)
    # static membership: alone in its group, the embedded broker handles it (docs/scaling.md)
    stats = service(s, static=True, gpus="0").run_once(timeout_s=60)
    seen = jobs_seen(s)
    assert sorted(j["track"] for j in seen) == ["firm-a", "legal"]  # firm-b takes drops only
    assert {j["release"] for j in seen} == {event.release_id}
    assert len({j["pid"] for j in seen}) == 2 and os.getpid() not in {j["pid"] for j in seen}
    assert {j["cuda"] for j in seen} == {"0"} and {j["gpus"] for j in seen} == {"0"}
    assert {j["worker"] for j in seen} == {instance_id(None, "0")}
    assert stats.releases == 1 and stats.jobs == 2 and stats.failed == 0
    assert all(r.ok for r in stats.results)


def test_cpu_mode_hides_every_gpu_from_the_child(settings: Settings, tmp_path: Path) -> None:
    s = with_tracks(settings, tmp_path, track(tmp_path, "legal"))
    publish(s, release())
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        service(s).run_once(timeout_s=60)
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old
    assert [j["cuda"] for j in jobs_seen(s)] == [""]


def test_a_refused_job_is_not_retried_and_the_next_release_is_handled(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(settings, tmp_path, track(tmp_path, "refuse-legal"), track(tmp_path, "ok"))
    first, second = release(revision="r1"), release(revision="r2")
    publish(s, first, second)
    worker = service(s)
    stats = worker.run_once(timeout_s=60)
    assert [(r.track, r.ok, r.retryable) for r in stats.results] == [
        ("refuse-legal", False, False),
        ("ok", True, False),
    ]
    assert "trust_remote_code" in (stats.results[0].message or "")
    stats = service(s).run_once(timeout_s=60)  # committed: the next run gets the next release
    assert {r.release_id for r in stats.results} == {second.release_id}
    seen = [(j["track"], j["release"]) for j in jobs_seen(s)]
    assert seen.count(("refuse-legal", first.release_id)) == 1  # not run again


def test_a_child_that_keeps_dying_is_retried_with_growing_delays_then_given_up(
    settings: Settings, tmp_path: Path
) -> None:
    # the window holds the first attempt's start of the job process (a few seconds, 8 s on a
    # loaded box, where a 4 s window once left room for one attempt) plus delays 0.5, 1, 2 s
    s = with_tracks(
        settings, tmp_path, track(tmp_path, "crash"), retry_delay_s=0.5, retry_window_s=15
    )
    event = release()
    publish(s, event)
    stats = service(s).run_once(timeout_s=60)
    seen = jobs_seen(s)
    attempts = [j["attempt"] for j in seen]
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) >= 3
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(seen)]
    assert gaps[-1] > gaps[0] + 0.3  # the delay grows (0.5, 1, 2 s)
    (result,) = stats.results
    assert not result.ok and result.reason == "crashed" and "exited with code 9" in result.message
    assert result.attempts == len(attempts)
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.runs, 1)
    failed = [e for e in map(decode_event, (r.value for r in records)) if isinstance(e, RunFailed)]
    # one terminal event: given up, not retryable, with the attempts made
    assert [(f.release_id, f.track, f.retryable, f.attempts) for f in failed] == [
        (event.release_id, "crash", False, len(attempts))
    ]
    assert "gave up after" in failed[0].reason and "exited with code 9" in failed[0].reason
    part = _partition(s, event)
    end = committed_offset(s.kafka_bootstrap, group(s), s.kafka.topics.releases, part)
    assert end is not None and end >= 1  # recorded failure: committed, not redelivered


def test_a_retryable_failure_is_tried_again_until_it_succeeds(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(
        settings, tmp_path, track(tmp_path, "flaky"), retry_delay_s=0.2, retry_window_s=60
    )
    event = release()
    publish(s, event)
    stats = service(s).run_once(timeout_s=60)
    assert [j["attempt"] for j in jobs_seen(s)] == [1, 2, 3]
    assert [(r.ok, r.attempts) for r in stats.results] == [(True, 3)]
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.runs, 0, timeout_s=2)
    events = [decode_event(r.value) for r in records]
    assert not [e for e in events if isinstance(e, RunFailed) and not e.retryable]


def _partition(s: Settings, event: ReleaseDetected) -> int:
    records = read_topic(s.kafka_bootstrap, s.kafka.topics.releases, 1)
    return next(r.partition for r in records if r.key == event.key().encode())


def test_stopping_mid_job_stops_the_child_and_leaves_the_release_uncommitted(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_tracks(settings, tmp_path, track(tmp_path, "slow"))
    (s.state_dir / "slow_s").write_text("120")
    event = release()
    publish(s, event)
    worker = service(s)
    runner = threading.Thread(target=lambda: worker.run_once(timeout_s=120), daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not jobs_seen(s) and time.monotonic() < deadline:
        time.sleep(0.2)
    (job,) = jobs_seen(s)
    worker.stop()
    runner.join(60)
    assert not runner.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(job["pid"], 0)
    part = _partition(s, event)
    assert committed_offset(s.kafka_bootstrap, group(s), s.kafka.topics.releases, part) is None
    assert worker.stats.releases == 0


def test_no_tracks_and_bad_gpus_are_config_errors(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no adoption tracks configured"):
        WorkerService(settings)
    s = with_tracks(settings, tmp_path, track(tmp_path, "legal"))
    with pytest.raises(ConfigError, match="--gpus"):
        WorkerService(s, gpus="0;rm")
    gone = track(tmp_path, "gone")
    gone.suite.unlink()
    with pytest.raises(ConfigError, match=r"suite .* is not a file"):
        WorkerService(s.model_copy(update={"tracks": [gone]}))


def test_instance_id_is_stable_and_names_the_devices() -> None:
    assert instance_id("pod-3", "0,1") == instance_id("pod-3", "0,1") == "pod-3-gpu0-1"
    assert instance_id("pod 3/x", None, "cpu") == "pod_3_x-cpu"


def test_the_progress_board_follows_a_jobs_events() -> None:
    from pipeline.worker.progress_board import ProgressBoard
    from uptake.events import CandidateRegistered, RunStage

    rid = release().release_id
    board = ProgressBoard(rid, ["legal", "firm-a"], models={"uptake-legal": "legal"}, live=False)
    board.apply(
        RunStage(
            release_id=rid,
            track="legal",
            stage="train",
            step=30,
            total_steps=120,
            tokens_per_s=950.0,
            eta_s=3725,
        )
    )
    board.apply(RunStage(release_id=rid, track="other", stage="fetch"))  # not ours: ignored
    board.apply(RunFailed(release_id=rid, track="firm-a", stage="holdout", reason="overlap: t1"))
    legal, firm = board.tracks["legal"], board.tracks["firm-a"]
    assert (legal.state, legal.stage, legal.progress(), legal.eta()) == (
        "running",
        "train",
        "30/120 (25%)",
        "1h02m",
    )
    assert (firm.state, firm.stage, firm.detail) == ("failed", "holdout", "overlap: t1")
    board.apply(
        CandidateRegistered(
            release_id=rid,
            registered_model="uptake-legal",
            version="4",
            model_uri="models:/uptake-legal/4",
            suite_sha="s",
            all_pass_rate=0.5,
            criterion_pass_rate=0.8,
        )
    )
    assert (legal.state, legal.detail) == ("registered", "uptake-legal v4")
    assert board.table().row_count == 2
