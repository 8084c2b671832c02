"""``uptake gc [--dry-run]`` and the state dir's line in ``uptake status`` (issue 19, item 6)."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import MlflowServer
from tests.core.cli_helpers import run_uptake
from uptake.retention import FETCHED_MARK, SERVING_MANIFEST, JobNote, write_note
from uptake.stack.process import free_port

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend


def _aged(path: Path, seconds_ago: float) -> Path:
    when = time.time() - seconds_ago
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))
    return path


def _fill(folder: Path, size: int, seconds_ago: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * size)
    return _aged(folder, seconds_ago)


def _worker_caches(home: Path) -> dict[str, Path]:
    job = _fill(home / "jobs" / ("a" * 32) / "train", 300_000).parent
    note = JobNote(
        release_id="hub:acme/m@r1", track="legal", state="registered", updated_at=datetime.now(UTC)
    )
    write_note(job, note)
    snaps = {}
    for i in range(3):
        snap = _fill(home / "models" / "acme_m" / f"r{i}", 200_000)
        (snap / FETCHED_MARK).write_text("x")
        snaps[f"r{i}"] = _aged(snap, i * 100)
    return {"job": job, **snaps}


def test_gc_dry_run_prints_the_plan_and_deletes_nothing_then_gc_deletes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = _worker_caches(home)
    env = {
        "UPTAKE_WORKER__KEEP_SNAPSHOTS": "1",
        "UPTAKE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    dry = run_uptake("gc", "--dry-run", home=home, **env)
    assert dry.returncode == 0, dry.stderr
    out = " ".join(dry.stdout.split())  # rich wraps long lines
    assert f"would delete {paths['job']}" in out and "MLflow holds the model" in out
    assert f"would delete {paths['r1']}" in out and f"would delete {paths['r2']}" in out
    assert str(paths["r0"]) not in out
    assert "3 folder(s)" in out and "would be freed" in out
    assert all(p.exists() for p in paths.values())  # a dry run deletes nothing
    real = run_uptake("gc", home=home, **env)
    assert real.returncode == 0, real.stderr
    assert "3 folder(s)" in real.stdout and "freed" in real.stdout
    assert [n for n, p in paths.items() if p.exists()] == ["r0"]


def _registered(tracking_uri: str, name: str, versions: int) -> None:
    from mlflow import MlflowClient

    from uptake.mlflow_contract import CHAMPION_ALIAS

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.create_run(client.create_experiment(name))
    client.create_registered_model(name)
    for _ in range(versions):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, "1")


def test_gc_keeps_servings_champion_and_newest(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    name = f"gc-{uuid.uuid4().hex[:6]}"
    _registered(mlflow_server.tracking_uri, name, 4)
    model = home / "serving" / name
    for v in "1234":
        _fill(model / v, 10_000, seconds_ago=(10 - int(v)) * 100)
        (model / v / SERVING_MANIFEST).write_text("{}")
    (model / ".5-downloading").mkdir()
    env = {"UPTAKE_SERVING__KEEP_VERSIONS": "1"}
    down = run_uptake(
        "gc", home=home, UPTAKE_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}", **env
    )
    assert down.returncode == 0, down.stderr
    assert "serving's versions left as they are" in " ".join(down.stdout.split())
    assert sorted(p.name for p in model.iterdir()) == [".5-downloading", "1", "2", "3", "4"]
    result = run_uptake(
        "gc", home=home, UPTAKE_MLFLOW_TRACKING_URI=mlflow_server.tracking_uri, **env
    )
    assert result.returncode == 0, result.stderr
    # the champion (1) and the newest (4) stay, with their manifests; the download in progress
    assert sorted(p.name for p in model.iterdir()) == [".5-downloading", "1", "4"]
    assert (model / "1" / SERVING_MANIFEST).is_file()


def test_status_shows_the_state_dirs_use_and_free_space(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _fill(home / "models" / "acme_m" / "r0", 100_000)
    down = {
        "UPTAKE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "UPTAKE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    result = run_uptake("status", "--json", "--timeout", "1", home=home, **down)
    disk = json.loads(result.stdout)["disk"]
    assert disk["path"] == str(home.resolve())
    assert disk["used_bytes"] >= 100_000 and 0 < disk["free_bytes"] <= disk["total_bytes"]
    shown = run_uptake("status", "--timeout", "1", home=home, **down)
    assert f"state dir {home.resolve()}:" in " ".join(shown.stdout.split())
    assert "free of" in shown.stdout
