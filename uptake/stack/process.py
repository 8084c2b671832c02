"""Child processes that are started in their own process group and stopped as a whole.

``mlflow server`` alone spawns uvicorn workers, a job runner and several huey consumers;
stopping only the parent pid would orphan them. Each managed process therefore gets a new
session (process group) and is stopped by signalling the group, escalating to SIGKILL.
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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
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
        pgid = self._proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.running or _group_alive(pgid)):
            time.sleep(0.1)
        if self.running or _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        elif self._proc.returncode is None:
            self._proc.wait()


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
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def free_port() -> int:
    """An unused loopback TCP port (racy by nature; good enough for local stacks and tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
