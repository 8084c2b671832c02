"""Stops what ``uptake up`` started when ``uptake up`` itself dies, however it dies.

``uptake up`` runs each component in its own process group (``mlflow server`` brings a whole
tree of uvicorn and huey processes), so a ``kill -9`` of ``uptake up`` would leave every
group running with no supervisor. A parent-death signal on the direct children would not
reach the grandchildren, so instead this tiny process, in a session of its own, reads the
groups to guard from a pipe whose only writer is ``uptake up``: ``+PGID`` when a component
starts, ``-PGID`` once it has been stopped. The kernel closes the pipe when ``uptake up``
exits for any reason; at end of file every group still listed is terminated.

Run as ``python -m uptake.stack.watchdog`` with the pipe as stdin (``Watchdog`` does that).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from typing import IO

from uptake.stack.process import terminate_groups

GRACE_S = 5.0  # the test allows 10 s from kill -9 to nothing left


class Watchdog:
    """The ``uptake up`` side: starts the guard process and tells it about each group."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "uptake.stack.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C to the terminal's group does not reach it
        )
        self._pipe: IO[bytes] | None = self._proc.stdin

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        if self._pipe is None:
            return
        try:
            self._pipe.write(f"{line}\n".encode())
            self._pipe.flush()
        except OSError:  # the guard is gone: nothing to tell
            self._pipe = None

    def guard(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def release(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """End of file for the guard: it stops what is still listed (nothing, after a clean
        stop) and exits."""
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=GRACE_S + 5)


def guard(stream: IO[str]) -> set[int]:
    """Read ``+PGID`` / ``-PGID`` lines until end of file; return the groups still listed."""
    groups: set[int] = set()
    for line in stream:
        op, number = line[:1], line[1:].strip()
        if not number.isdigit():
            continue
        if op == "+":
            groups.add(int(number))
        elif op == "-":
            groups.discard(int(number))
    return groups


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    terminate_groups(sorted(guard(sys.stdin)), GRACE_S)


if __name__ == "__main__":
    main()
