"""``uptake demo --small`` end to end: the real stack adopts two tiny releases.

One test, run as a newcomer runs it (the CLI in a subprocess), then checked against MLflow's
own store (the server is gone by then: the demo stops what it started), the demo's result
file and the report it wrote. Nothing is mocked: embedded broker, MLflow, watcher, worker
(TRL training on CPU), promoter and serving all run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uptake.demo.config import REGISTERED_MODEL
from uptake.demo.run import RESULT_FILE, DemoResult
from uptake.mlflow_contract import (
    ALL_PASS_RATE,
    BASELINE_PREFIX,
    CHAMPION_ALIAS,
    COST_PER_TASK,
    DECISION_TAG,
    RELEASE_ID_TAG,
)
from uptake.stack.process import port_open

DEMO_TIMEOUT_S = 1500  # a cap: a loaded 2-core CI box ran 5x slower than idle


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or environment names ``text`` (the demo home)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_adopts_two_releases_end_to_end(tmp_path: Path) -> None:
    import yaml
    from mlflow import MlflowClient

    home = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "160"}
    for var in ("UPTAKE_CONFIG", "UPTAKE_HOME", "UPTAKE_KAFKA_BOOTSTRAP"):
        env.pop(var, None)
    env.pop("UPTAKE_MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "uptake.cli", "demo", "--small", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        env=env,
    )
    output = (done.stdout + done.stderr)[-6000:]
    assert (home / RESULT_FILE).is_file(), output
    result = DemoResult.model_validate_json((home / RESULT_FILE).read_text())
    assert done.returncode == 0, output
    assert result.ok, (result.problems, output)

    # two releases detected (each its release id from the watcher's event)
    assert [r.detected for r in result.releases] == [True, True], result.releases
    release_ids = {r.release_id for r in result.releases}
    assert len(release_ids) == 2 and None not in release_ids

    # two runs registered: read MLflow's own store, the server stopped with the demo
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    versions = sorted(
        client.search_model_versions(f"name='{REGISTERED_MODEL}'"), key=lambda v: int(v.version)
    )
    assert len(versions) == 2
    assert {
        v.tags.get(RELEASE_ID_TAG) or client.get_run(v.run_id).data.tags[RELEASE_ID_TAG]
        for v in versions
    } == release_ids

    # the champion alias points at the version the gate chose last
    # MLflow's SQL store gives versions as int, its REST API (the demo's) as str
    promoted = [str(v.version) for v in versions if v.tags.get(DECISION_TAG) == "promoted"]
    assert promoted, [v.tags for v in versions]
    champion = str(client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS).version)
    assert champion == promoted[-1] == result.champion

    # serving answered with that version's header
    assert result.answer is not None and result.answer.status_code == 200
    assert result.answer.version == champion
    assert result.answer.text.strip()

    # post-training beat each base model
    for v in versions:
        metrics = client.get_run(v.run_id).data.metrics
        assert metrics[ALL_PASS_RATE] > metrics[BASELINE_PREFIX + ALL_PASS_RATE], (
            v.version,
            metrics,
        )

    # the report: the adoption table, each version's timeline and its quality-cost chart (the
    # demo's worker priced every run by the CPU hour: no price was given to the report)
    index = (home / "reports" / "index.md").read_text()
    assert "post-trained all-pass" in index and "release → serving" in index
    for v in versions:
        assert client.get_run(v.run_id).data.metrics[COST_PER_TASK] > 0
        page = (home / "reports" / f"v{v.version}" / "report.md").read_text()
        assert "## Timeline" in page and "serving swapped" in page
        assert "](quality_cost.png)" in page and "no data logged" not in page
    assert "| release | base all-pass" in (home / "demo-summary.md").read_text()

    # nothing left running: no process names the home, the ports are free
    assert _processes_mentioning(str(home)) == []
    config = yaml.safe_load((home / "uptake-demo.yaml").read_text())
    for port in (config["kafka"]["embedded_port"], config["mlflow"]["port"]):
        assert not port_open("127.0.0.1", port)
