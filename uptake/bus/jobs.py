"""Run a long job in a child process, so the consumer's own thread stays free to poll Kafka.

Training takes hours; a consumer that blocks that long misses ``max_poll_interval_ms`` and is
evicted from its group, and its message is handed to another member. Running the job in a
spawned child lets the parent keep calling ``poll()`` with its partitions paused.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class LongJob:
    """What a handler returns to have its work done in a child process.

    ``target`` must be importable at module level (the child is spawned, not forked, so no
    Kafka sockets or threads leak into it) and its arguments picklable.
    """

    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = "job"


def _child_main(conn: Connection, job: LongJob) -> None:
    try:
        job.target(*job.args, **job.kwargs)
    except BaseException as exc:
        lines = traceback.format_exception_only(type(exc), exc)
        conn.send(lines[-1].strip() if lines else repr(exc))
        conn.close()
        raise SystemExit(1) from None
    conn.send(None)
    conn.close()


class ChildJob:
    """A started job: poll ``done()``, then read ``error`` (None when it succeeded)."""

    def __init__(self, job: LongJob) -> None:
        ctx = mp.get_context("spawn")
        self._reader, writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_child_main, args=(writer, job), name=job.name)
        self._process.start()
        writer.close()
        self._message: str | None = None
        self._received = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def done(self, wait_s: float = 0.0) -> bool:
        self._process.join(timeout=wait_s)
        if self._process.is_alive():
            return False
        self._collect()
        return True

    def _collect(self) -> None:
        if self._received:
            return
        self._received = True
        try:
            if self._reader.poll():
                self._message = self._reader.recv()
        except (EOFError, OSError):
            self._message = None
        self._reader.close()

    @property
    def error(self) -> str | None:
        """Why the job failed, or None if it exited 0."""
        code = self._process.exitcode
        if code == 0:
            return None
        if self._message:
            return self._message
        if code is not None and code < 0:
            return f"job process killed by signal {-code}"
        return f"job process exited with code {code}"

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``grace_s``)."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(grace_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._collect()
