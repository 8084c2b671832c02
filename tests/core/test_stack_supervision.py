"""``uptake up`` keeps its stack up and never leaves it behind: real processes, real ports.

One stack serves the module (MLflow takes 20-40 s to start here): a service killed with
SIGKILL comes back with restart count 1 while the others keep their pids; a crash-looping
one is given up while the rest stay up; finally ``kill -9`` of ``uptake up`` itself leaves
no process and no port behind, and ``uptake up`` starts again at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.core.cli_helpers import ROOT, clean_env, run_uptake, uptake_argv
from tests.core.proc_helpers import alive, descendants, process_groups
from uptake.events import AlertRaised, EventDecodeError, decode_event
from uptake.services import SERVICES
from uptake.settings import Settings
from uptake.stack.local import StackInfo, clean_stale_stack, stack_file
from uptake.stack.process import free_port, port_open, start_ticks
from uptake.stack.restarts import ComponentRecord, RestartTracker
from uptake.stack.watchdog import Watchdog
from uptake.stack_config import StackSettings

CRASH_LOOP_EXITS = 3


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    home: Path
    env: dict[str, str]
    log: Path

    def info(self) -> dict[str, ComponentRecord]:
        return StackInfo.model_validate_json((self.home / "stack.json").read_text()).processes

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, what: str, check: Callable[[dict], Any], timeout_s: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"uptake up ended:\n{self.output()}"
            try:
                if result := check(self.info()):
                    return result
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; stack: {self.info()}\n{self.output()}")


def _start(home: Path, env: dict[str, str], log: Path) -> Stack:
    with log.open("a") as out:
        proc = subprocess.Popen(
            uptake_argv("up"),
            env=clean_env(home, **env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # like a terminal: only `uptake up` gets our signals
        )
    stack = Stack(proc, home, env, log)
    names = {"broker", "mlflow", *(s.name for s in SERVICES if s.enabled is None)}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        status = run_uptake("status", "--json", "--timeout", "2", home=home, **env)
        report = json.loads(status.stdout)
        ready = status.returncode == 0 and set(report["local_stack"]) == names
        if ready and report["local_stack_pid"] == proc.pid:
            return stack
        time.sleep(2)
    proc.kill()
    raise AssertionError(f"uptake up did not come up:\n{log.read_text()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("supervised")
    env = {
        "UPTAKE_KAFKA__EMBEDDED_PORT": str(free_port()),
        "UPTAKE_MLFLOW__PORT": str(free_port()),
        "UPTAKE_STACK__RESTART_BACKOFF_INITIAL_S": "0.5",
        "UPTAKE_STACK__RESTART_BACKOFF_MAX_S": "1",
        "UPTAKE_STACK__CRASH_LOOP_EXITS": str(CRASH_LOOP_EXITS),
    }
    stack = _start(tmp / "home", env, tmp / "up.log")
    yield stack
    if stack.proc.poll() is None:
        stack.proc.send_signal(signal.SIGINT)
        stack.proc.wait(timeout=60)


def _service_alerts(bootstrap: str) -> list[AlertRaised]:
    """Every ``alert.raised`` that ``uptake up`` published on the releases topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition("uptake.releases", 0)
        parts = [TopicPartition(tp.topic, p) for p in consumer.partitions_for_topic(tp.topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[AlertRaised] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(consumer.position(p) < ends[p] for p in parts):
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except EventDecodeError:
                        continue
                    if isinstance(event, AlertRaised) and event.producer == "uptake-up":
                        out.append(event)
        return out
    finally:
        consumer.close()


def _running(pid: int | None) -> bool:
    return pid is not None and start_ticks(pid) is not None


@pytest.mark.slow
def test_a_killed_service_is_restarted_and_the_others_are_untouched(stack: Stack) -> None:
    before = stack.info()
    os.kill(before["watcher"].pid, signal.SIGKILL)
    after = stack.wait_for(
        "the watcher's restart",
        lambda info: (
            info if info["watcher"].restarts == 1 and info["watcher"].state == "running" else None
        ),
    )
    watcher = after["watcher"]
    assert watcher.pid != before["watcher"].pid and _running(watcher.pid)
    assert watcher.last_exit and watcher.last_exit.startswith("killed by SIGKILL")
    for name, record in before.items():
        if name != "watcher":
            assert after[name].pid == record.pid and after[name].restarts == 0, name
            assert _running(record.pid), name
    output = stack.output()
    assert "watcher exited unexpectedly (killed by SIGKILL" in output
    assert f"watcher restarted (pid {watcher.pid}, restart 1)" in output
    status = run_uptake("status", "--json", "--timeout", "2", home=stack.home, **stack.env)
    shown = json.loads(status.stdout)["local_stack"]["watcher"]
    assert shown["restarts"] == 1 and shown["last_exit"].startswith("killed by SIGKILL")
    bootstrap = f"127.0.0.1:{stack.env['UPTAKE_KAFKA__EMBEDDED_PORT']}"
    alerts = _service_alerts(bootstrap)
    assert [(a.component, a.condition, a.resolved) for a in alerts] == [
        ("stack:watcher", "restarted", False)
    ]


@pytest.mark.slow
def test_a_crash_looping_service_is_given_up_while_the_rest_stay_up(stack: Stack) -> None:
    before = stack.info()
    for n in range(CRASH_LOOP_EXITS):
        pid = stack.wait_for(
            f"promoter run {n + 1}",
            lambda info, n=n: (
                info["promoter"].pid
                if info["promoter"].restarts == n and info["promoter"].state == "running"
                else None
            ),
        )
        os.kill(pid, signal.SIGKILL)
    promoter = stack.wait_for(
        "the promoter given up",
        lambda info: info["promoter"] if info["promoter"].state == "failed" else None,
    )
    assert promoter.pid is None and promoter.restarts == CRASH_LOOP_EXITS - 1
    time.sleep(2)  # it stays given up, and nothing else moved
    after = stack.info()
    assert after["promoter"].state == "failed"
    for name, record in before.items():
        if name != "promoter":
            assert after[name].pid == record.pid and _running(record.pid), name
            assert after[name].state == "running", name
    assert stack.proc.poll() is None
    assert f"promoter exited {CRASH_LOOP_EXITS} times within 600s" in stack.output()
    assert "giving up on it, the rest stays up" in stack.output()
    status = run_uptake("status", "--json", "--timeout", "2", home=stack.home, **stack.env)
    assert json.loads(status.stdout)["local_stack"]["promoter"]["state"] == "failed"
    bootstrap = f"127.0.0.1:{stack.env['UPTAKE_KAFKA__EMBEDDED_PORT']}"
    conditions = [(a.component, a.condition) for a in _service_alerts(bootstrap)]
    assert conditions.count(("stack:promoter", "restarted")) == CRASH_LOOP_EXITS - 1
    assert conditions[-1] == ("stack:promoter", "crash_loop")


@pytest.mark.slow
def test_kill_9_of_up_leaves_nothing_behind_and_up_starts_again(
    stack: Stack, tmp_path: Path
) -> None:
    tree = descendants(stack.proc.pid)
    groups = process_groups(tree)
    ports = [int(stack.env["UPTAKE_KAFKA__EMBEDDED_PORT"]), int(stack.env["UPTAKE_MLFLOW__PORT"])]
    assert len(tree) >= 4 and all(port_open("127.0.0.1", p) for p in ports)
    stack.proc.kill()
    stack.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (alive(tree, groups) or any(port_open("127.0.0.1", p) for p in ports)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert alive(tree, groups) == set()
    assert not any(port_open("127.0.0.1", p) for p in ports)
    again = _start(stack.home, stack.env, tmp_path / "up-again.log")
    try:
        assert again.proc.poll() is None
        assert "already in use" not in again.output()
        again.proc.send_signal(signal.SIGINT)
        assert again.proc.wait(timeout=60) == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


def _group_with_a_child(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process group like a component's: a leader and a child of its own."""
    return subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True, cwd=tmp_path)


def _write_stale(settings: Settings, records: dict[str, ComponentRecord]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the `uptake up` that wrote the file
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    info = StackInfo(
        pid=gone.pid,
        started_ticks=1,
        kafka_bootstrap="127.0.0.1:1",
        mlflow_tracking_uri="http://127.0.0.1:1",
        embedded_broker=True,
        embedded_mlflow=True,
        components={n: r.pid for n, r in records.items()},
        processes=records,
    )
    stack_file(settings).write_text(info.model_dump_json())


def _wait_gone(pgid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(set(), {pgid}):
            return True
        time.sleep(0.1)
    return False


def test_up_stops_what_a_stale_stack_json_recorded(tmp_path: Path) -> None:
    """The file of a dead `uptake up` (no watchdog got to it): its groups are stopped first."""
    settings = Settings(home=tmp_path / "home")
    left = _group_with_a_child(tmp_path)
    reused = _group_with_a_child(tmp_path)  # its pid recorded with another start time
    try:
        time.sleep(0.3)
        _write_stale(
            settings,
            {
                "broker": ComponentRecord(pid=left.pid, started_ticks=start_ticks(left.pid)),
                "mlflow": ComponentRecord(pid=reused.pid, started_ticks=1),
            },
        )
        result = run_uptake(
            "up",
            home=settings.home,
            UPTAKE_BROKER_BIN=str(tmp_path / "nope"),
            UPTAKE_KAFKA__EMBEDDED_PORT=str(free_port()),
        )
        assert result.returncode == 3, result.stderr  # then it stops at the missing binary
        assert _wait_gone(left.pid), "the recorded group is still running"
        assert left.wait(timeout=5) is not None
        assert reused.poll() is None, "a pid that is no longer the recorded process was killed"
    finally:
        for proc in (left, reused):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_stale_stack_json_of_a_live_up_or_of_unverifiable_pids_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.state_dir.mkdir(parents=True)
    info = StackInfo(
        pid=os.getpid(),
        started_ticks=start_ticks(os.getpid()),
        kafka_bootstrap="127.0.0.1:1",
        mlflow_tracking_uri="http://127.0.0.1:1",
        embedded_broker=True,
        embedded_mlflow=True,
        components={},
    )
    stack_file(settings).write_text(info.model_dump_json())
    with pytest.raises(Exception, match=rf"another `uptake up` \(pid {os.getpid()}\) is running"):
        clean_stale_stack(settings)
    survivor = _group_with_a_child(tmp_path)
    try:
        old = info.model_copy(update={"pid": 999_999_999, "components": {"mlflow": survivor.pid}})
        stack_file(settings).write_text(old.model_dump_json())  # an older file: no start times
        with pytest.raises(Exception, match=rf"mlflow \(pid {survivor.pid}\)"):
            clean_stale_stack(settings)
        assert survivor.poll() is None  # named, not killed
    finally:
        os.killpg(survivor.pid, signal.SIGKILL)
        survivor.wait()


def test_the_watchdog_stops_guarded_groups_when_its_pipe_closes(tmp_path: Path) -> None:
    """End of file on the pipe is what kill -9 of `uptake up` gives the watchdog."""
    watchdog = Watchdog()
    guarded, released = _group_with_a_child(tmp_path), _group_with_a_child(tmp_path)
    try:
        watchdog.guard(guarded.pid)
        watchdog.guard(released.pid)
        watchdog.release(released.pid)  # stopped by `uptake up` itself: not the watchdog's
        watchdog.close()
        assert _wait_gone(guarded.pid)
        assert released.poll() is None
    finally:
        for proc in (guarded, released):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_restart_backoff_doubles_and_a_crash_loop_is_given_up() -> None:
    now = [0.0]
    cfg = StackSettings(
        restart_backoff_initial_s=1,
        restart_backoff_max_s=3,
        crash_loop_exits=4,
        crash_loop_window_s=100,
        stable_after_s=10,
    )
    tracker = RestartTracker(cfg, clock=lambda: now[0])
    delays = []
    for _ in range(3):
        delays.append(tracker.exited("exit code 1"))
        assert tracker.state == "restarting" and not tracker.due()
        now[0] += delays[-1]
        assert tracker.due()
        tracker.restarted()
    assert delays == [1, 2, 3] and tracker.restarts == 3  # doubling, capped at the max
    assert not tracker.stable()
    now[0] += 10
    assert tracker.stable()
    now[0] += 100  # the earlier exits left the window: the backoff starts over
    assert tracker.exited("killed by SIGKILL") == 1
    tracker.restarted()
    for _ in range(2):
        assert tracker.exited("exit code 1") is not None
        tracker.restarted()
    assert tracker.exited("exit code 1") is None  # 4 within 100 s: given up
    assert tracker.state == "failed" and tracker.last_exit == "exit code 1"
