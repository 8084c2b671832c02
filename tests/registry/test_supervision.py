"""A promoter or alerter whose consumer thread dies exits 1 with the reason on one line.

Real processes on the real broker (and MLflow for the promoter): ``uptake promoter`` and
``uptake alerter`` run through ``tests.registry.crashing_cli``, which makes the loop of one
consumer group crash after it has consumed for a second. Before, the promoter exited 0 when its
consumer died (a supervisor saw a clean stop and did not restart it), and a dead alerter
consumer went unnoticed: the process ran on without alerts.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.core.cli_helpers import ROOT, clean_env
from uptake.settings import Settings

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend

CASES = {
    # (command, whose consumer crashes, the reason the error line gives)
    "promoter": ("promoter", "promoter", "promoter: consumer died: InjectedCrash"),
    "alerter in the promoter": ("promoter", "alerter", "promoter: alerter consumer died"),
    "alerter": ("alerter", "alerter", "alerter: alerter consumer died: InjectedCrash"),
}


def _config(path: Path, s: Settings, groups: dict[str, str]) -> Path:
    k = s.kafka
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "topics": k.topics.model_dump(),
                    "poll_timeout_ms": 200,
                    "max_poll_interval_ms": 10_000,
                    "session_timeout_ms": 10_000,
                },
                "registry": {
                    "consumer_group": groups["promoter"],
                    "webhook": {"enabled": False},
                    "reconcile_interval_s": 3600,
                },
                "alerts": {
                    "consumer_group": groups["alerter"],
                    # never called here: no event reaches the alerter before it crashes
                    "channels": {"audit": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}},
                },
            }
        )
    )
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_a_dead_consumer_ends_the_service_with_exit_1_and_one_line(
    case: str, mlflow_settings: Settings, tmp_path: Path
) -> None:
    command, crashing, reason = CASES[case]
    groups = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("promoter", "alerter")}
    config = _config(tmp_path / "uptake.yaml", mlflow_settings, groups)
    env = clean_env(
        tmp_path / "home",
        UPTAKE_KAFKA_BOOTSTRAP=mlflow_settings.kafka_bootstrap or "",
        UPTAKE_MLFLOW_TRACKING_URI=mlflow_settings.tracking_uri,
    )
    argv = [sys.executable, "-m", "tests.registry.crashing_cli", groups[crashing]]
    try:
        done = subprocess.run(
            [*argv, command, "--config", str(config)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=150,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command} kept running without its consumer: {exc.stderr!r}"[-2000:])
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert reason in errors[0]
    assert errors[0].endswith(
        "injected fault in group " + groups[crashing] + " (second line of the message)"
    )
