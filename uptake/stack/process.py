"""Child processes that are started in their own process group and stopped as a whole.

``mlflow server`` alone spawns uvicorn workers, a job runner and several huey consumers;
stopping only the parent pid would orphan them. Each managed process therefore gets a new
session (process group) and is stopped by signalling the group, escalating to SIGKILL.
Each start records the process's start time from /proc, so a pid written to ``stack.json``
can later be told apart from an unrelated process that reused it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from uptake.errors import DependencyError


class ManagedProcess:
    """One started command, its log file, and a health check."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        healthy: Callable[[], bool] | None = None,
        address: str = "",
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.healthy = healthy or (lambda: self.running)
        self.address = address
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_ticks: int | None = None  # /proc start time of the current process
        self._log_offset = 0  # where the current process's output begins in its log

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def exit_reason(self) -> str:
        """How the last process ended, with its last log line (a service's ``error: ...``)."""
        code = self.returncode
        how = "still running" if code is None else describe_exit(code)
        last = last_log_line(self.log_path, since=self._log_offset)
        return f"{how}: {last}" if last else how

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log_offset = log.seek(0, os.SEEK_END)
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        except OSError as exc:
            raise DependencyError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from None
        finally:
            log.close()
        self.started_ticks = start_ticks(self._proc.pid)
        return self

    def wait_healthy(self, timeout_s: float) -> None:
        """Block until the health check passes; fail early if the process dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise DependencyError(
                    f"{self.name} exited with code {self._proc.returncode if self._proc else '?'}"
                    f" during start-up; see {self.log_path}"
                )
            try:
                if self.healthy():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.25)
        self.stop()
        raise DependencyError(
            f"{self.name} not healthy after {timeout_s:.0f}s; see {self.log_path}"
        )

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left."""
        if self._proc is None:
            return
        proc = self._proc
        terminate_group(proc.pid, grace_s, lambda: proc.poll() is None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def terminate_group(
    pgid: int, grace_s: float = 15.0, leader_running: Callable[[], bool] = lambda: False
) -> None:
    """SIGTERM process group ``pgid``, wait up to ``grace_s``, then SIGKILL what is left.

    ``leader_running`` reports a leader that is our own child (alive until we reap it)."""
    terminate_groups([pgid], grace_s, leader_running)


def terminate_groups(
    pgids: list[int], grace_s: float = 15.0, leader_running: Callable[[], bool] = lambda: False
) -> None:
    """``terminate_group`` for several groups at once: one grace period for all of them."""
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s

    def left() -> list[int]:
        return [g for g in pgids if _group_alive(g)] if not leader_running() else pgids

    while time.monotonic() < deadline and left():
        time.sleep(0.1)
    for pgid in left():
        _signal_group(pgid, signal.SIGKILL)


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL`` (Popen gives -N for a signal N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def last_log_line(path: Path, max_bytes: int = 4096, since: int = 0) -> str:
    """The last non-empty line written to a log file after offset ``since`` (bounded), or
    ``""`` (a restarted process appends to its predecessor's log)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(since, fh.seek(0, os.SEEK_END) - max_bytes))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.split("\n") if line.strip()]
    return " ".join(lines[-1].split())[:300] if lines else ""


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), or None
    when it is gone. Same pid and same start time: the same process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def group_members(pgid: int) -> list[int]:
    """Live, non-zombie processes in process group ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group still exists (zombies of ours excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left? Those are reaped by their parent; don't wait on them forever.
    return bool(group_members(pgid))


def free_port() -> int:
    """An unused loopback TCP port (racy by nature; good enough for local stacks and tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
