"""``uptake worker`` as a user runs it: one-line config errors (exit 2) and ``--once`` exit codes
with the real job engine, broker and MLflow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.worker.status import worker_status
from tests.conftest import unique_topics
from tests.core.cli_helpers import run_uptake
from tests.worker.helpers import build_release_dir, dir_release, drops_source, make_track
from uptake.bus import EventProducer, ensure_topics
from uptake.settings import Settings
from uptake.tracks import Track


def _worker_config(tmp_path: Path, stack: Settings, drops: Path, *tracks: Track) -> Path:
    config = tmp_path / "uptake.yaml"
    config.write_text(
        json.dumps(
            {
                "tracks": [t.model_dump(mode="json") for t in tracks],
                "sources": [drops_source(drops).model_dump(mode="json")],
                "worker": {"device": "cpu", "experiment": "uptake-cli-test"},
                "kafka": stack.kafka.model_dump(mode="json"),
            }
        ),
        encoding="utf-8",
    )
    return config


def _worker_once(
    stack: Settings, config: Path, group: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return run_uptake(
        "worker",
        "--once",
        "--timeout",
        "120",
        "--group",
        group,
        home=tmp_path / "home",
        timeout=300,
        UPTAKE_CONFIG=str(config),
        UPTAKE_KAFKA_BOOTSTRAP=stack.kafka_bootstrap or "",
        UPTAKE_MLFLOW_TRACKING_URI=stack.tracking_uri,
    )


def test_no_tracks_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_uptake("worker", home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: no adoption tracks configured (tracks: in the config, docs/configuration.md): "
        "the worker has nothing to adopt releases into"
    ]


def test_bad_gpus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    legal = make_track(tmp_path / "tracks", "legal")
    config = tmp_path / "uptake.yaml"
    config.write_text(json.dumps({"tracks": [{**legal.model_dump(mode="json")}]}), encoding="utf-8")
    result = run_uptake("worker", "--gpus", "0;1", home=tmp_path, UPTAKE_CONFIG=str(config))
    assert result.returncode == 2, result.stderr
    expected = "error: --gpus: expected device numbers like 0 or 0,1, got '0;1'"
    assert result.stderr.strip() == expected


@pytest.mark.slow
@pytest.mark.one_backend
def test_once_exits_1_for_a_failed_release_with_the_reason(
    stack: Settings, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('changed')}"
    folder = build_release_dir(drops, repo)
    event = dir_release(drops, repo)
    (folder / "config.json").write_text("{}")  # changed since detection: refused at fetch
    legal = make_track(tmp_path / "tracks", "legal", unique("uptake-legal"))
    config = _worker_config(tmp_path, stack, drops, legal)
    with EventProducer(stack, "test") as producer:
        producer.publish(event)
    result = _worker_once(stack, config, unique("pipeline"), tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"{event.release_id} [legal]: failed at fetch" in result.stderr
    # `uptake status`: the failure with its reason, nothing in progress
    worker = stack.worker.model_copy(update={"experiment": "uptake-cli-test"})
    section = worker_status(stack.model_copy(update={"tracks": [legal], "worker": worker}))
    assert section.error is None and section.data["in_progress"] == []
    (failure,) = [f for f in section.data["failures"] if f["release_id"] == event.release_id]
    assert failure["track"] == "legal" and failure["stage"] == "fetch" and failure["detail"]
    assert [event.release_id, "legal", "failed", "fetch"] in [r[:4] for r in section.rows]


@pytest.mark.slow
@pytest.mark.one_backend
def test_once_exits_0_for_a_registered_and_an_already_registered_release(
    stack: Settings, drops: Path, unique, tmp_path: Path
) -> None:
    repo = f"acme/{unique('once')}"
    build_release_dir(drops, repo)
    event = dir_release(drops, repo)
    legal = make_track(tmp_path / "tracks", "legal", unique("uptake-legal"))
    # its own topics: a new group reads from the start, and this is to be its only release
    stack = stack.model_copy(
        update={"kafka": stack.kafka.model_copy(update={"topics": unique_topics()})}
    )
    ensure_topics(stack)
    config = _worker_config(tmp_path, stack, drops, legal)
    group = unique("pipeline")
    client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    for _ in range(2):  # the second delivery finds the key registered and re-announces it
        with EventProducer(stack, "test") as producer:
            producer.publish(event)
        result = _worker_once(stack, config, group, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        versions = client.search_model_versions(f"name = '{legal.registered_model}'")
        assert [str(v.version) for v in versions] == ["1"]
