"""``uptake up`` / ``status`` end to end: real processes, real ports, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import MlflowServer
from tests.core.cli_helpers import ROOT, clean_env, run_uptake, uptake_argv
from tests.core.proc_helpers import alive, descendants, process_groups
from uptake.services import SERVICES
from uptake.stack.probes import kafka_healthy
from uptake.stack.process import free_port

# what this module tests does not depend on the MLflow store: one store (README "Tests")
pytestmark = pytest.mark.one_backend


def _status(home: Path, **env: str) -> tuple[int, dict]:
    result = run_uptake("status", "--json", "--timeout", "2", home=home, **env)
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
def test_up_starts_healthy_stack_and_sigint_leaves_no_orphans(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "UPTAKE_KAFKA__EMBEDDED_PORT": str(free_port()),
        "UPTAKE_MLFLOW__PORT": str(free_port()),
    }
    log = (tmp_path / "up.log").open("w")
    # start_new_session: like a terminal, we signal only `uptake up` itself
    proc = subprocess.Popen(
        uptake_argv("up"),
        env=clean_env(home, **env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        code, report = 1, {}
        names = {"broker", "mlflow", *(s.name for s in SERVICES if s.enabled is None)}
        while time.monotonic() < deadline and proc.poll() is None:
            code, report = _status(home)  # finds the stack through <home>/stack.json
            if code == 0 and set(report["local_stack"]) == names:  # written as each starts
                break
            time.sleep(2)
        assert code == 0, (tmp_path / "up.log").read_text()
        assert report["healthy"] and report["broker"]["healthy"] and report["mlflow"]["healthy"]
        assert report["local_stack_pid"] == proc.pid
        assert {t["name"] for t in report["topics"] if t["exists"]} == {
            "uptake.releases",
            "uptake.runs",
            "uptake.decisions",
            "uptake.dlq",
        }
        # stack.json lists a service as it starts; the table follows once the last is healthy
        while "Ctrl-C stops everything." not in (output := (tmp_path / "up.log").read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, output
            time.sleep(1)
        assert "MLflow UI: http://127.0.0.1:" in output and "Kafka bootstrap: 127.0.0.1:" in output
        # no tracks configured: the worker is left out, and its row says why
        (row,) = [line for line in output.splitlines() if "not started" in line]
        assert "worker" in row and "adoption" in output
        components = json.loads((home / "stack.json").read_text())["components"]
        assert set(components) == {
            "broker",
            "mlflow",
            *(s.name for s in SERVICES if s.enabled is None),
        }
        tree = descendants(proc.pid)
        assert {pid for pid in components.values()} <= tree
        groups = process_groups(tree)
        assert len(tree) >= 3  # broker, mlflow server and its workers
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    deadline = time.monotonic() + 10
    while alive(tree, groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(tree, groups) == set()
    assert not (home / "stack.json").exists()
    code, report = _status(home, **env)
    assert code == 1 and not report["broker"]["healthy"] and not report["mlflow"]["healthy"]


def test_up_refuses_a_busy_port_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_uptake("up", home=tmp_path, UPTAKE_KAFKA__EMBEDDED_PORT=str(port))
    assert result.returncode == 3
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_up_without_broker_binary_says_how_to_get_one(tmp_path: Path) -> None:
    result = run_uptake(
        "up",
        home=tmp_path,
        UPTAKE_BROKER_BIN=str(tmp_path / "nope"),
        UPTAKE_KAFKA__EMBEDDED_PORT=str(free_port()),
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: UPTAKE_BROKER_BIN={tmp_path / 'nope'} is not an executable file"
    )


def test_status_json_reports_external_broker_and_mlflow(
    broker: str, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    code, report = _status(
        tmp_path,
        UPTAKE_KAFKA_BOOTSTRAP=broker,
        UPTAKE_MLFLOW_TRACKING_URI=mlflow_server.tracking_uri,
    )
    assert code == 0
    assert report["broker"] == {"name": "broker", "address": broker, "healthy": True, "detail": ""}
    assert report["mlflow"]["healthy"] and report["mlflow"]["address"] == mlflow_server.tracking_uri
    assert report["local_stack_pid"] is None


def test_status_counts_topic_offsets(settings, tmp_path: Path) -> None:
    from tests.core.events_factory import one_of_each
    from uptake.bus import EventProducer, ensure_topics

    ensure_topics(settings)
    with EventProducer(settings) as producer:
        for event in one_of_each()[:2]:
            producer.publish(event)
    t = settings.kafka.topics
    code, report = _status(
        tmp_path,
        UPTAKE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        UPTAKE_KAFKA__TOPICS__RELEASES=t.releases,
        UPTAKE_KAFKA__TOPICS__RUNS=t.runs,
        UPTAKE_KAFKA__TOPICS__DECISIONS=t.decisions,
        UPTAKE_KAFKA__TOPICS__DLQ=t.dlq,
        UPTAKE_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}",
    )
    assert code == 1  # MLflow is down
    counts = {topic["name"]: topic["messages"] for topic in report["topics"]}
    assert counts == {t.releases: 1, t.runs: 1, t.decisions: 0, t.dlq: 0}


@pytest.mark.slow
@pytest.mark.parametrize("piece", ["broker", "mlflow"])
def test_single_piece_commands_start_only_that_piece(piece: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "UPTAKE_KAFKA__EMBEDDED_PORT": str(free_port()),
        "UPTAKE_MLFLOW__PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        uptake_argv(piece),
        env=clean_env(home, **env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        report: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            _, report = _status(home, **env)
            if report[piece]["healthy"]:
                break
            time.sleep(1)
        assert report[piece]["healthy"], report
        other = "mlflow" if piece == "broker" else "broker"
        assert not report[other]["healthy"]
        assert set(json.loads((home / "stack.json").read_text())["components"]) == {piece}
        tree = descendants(proc.pid)
        groups = process_groups(tree)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopped" in output
    deadline = time.monotonic() + 10
    while alive(tree, groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(tree, groups) == set()


def test_kafka_probe_tells_a_broker_from_a_closed_port_and_a_silent_listener(broker: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    assert kafka_healthy(broker)
    assert kafka_healthy(f"{closed},{broker}")  # any bootstrap address that answers will do
    assert not kafka_healthy(closed, timeout_s=1)
    with socket.socket() as silent:  # accepts TCP but never speaks Kafka
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert not kafka_healthy(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=1)
        assert time.monotonic() - started < 15
