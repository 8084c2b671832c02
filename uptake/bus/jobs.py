"""Run a long job in a child process, so the consumer's own thread stays free to poll Kafka.

Training takes hours; a consumer that blocks that long misses ``max_poll_interval_ms`` and is
evicted from its group, and its message is handed to another member. Running the job in a
spawned child lets the parent keep calling ``poll()`` with its partitions paused. A long-lived
caller can fork its children from a server that imported the heavy modules once instead
(``preloaded_context``).

Three things keep a job from holding its partitions forever: the child's report is bounded
and the parent drains the pipe while it waits (a report larger than the pipe's buffer used
to block the child while the parent waited for it to exit); every job has a deadline, after
which it is stopped (SIGTERM, then SIGKILL) and failed with reason ``deadline``; and a
failure says whether a retry could help (``JobOutcome.retryable``), so a refusal is not run
again.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from uptake.errors import encodable, is_retryable

DEFAULT_DEADLINE_S = 24 * 3600.0  # a day: longer than any training run uptake expects
MESSAGE_CHARS = 4_000  # of a failure's message: enough for the reason, never a whole log
STOP_GRACE_S = 10.0  # between SIGTERM and SIGKILL


JobContext = SpawnContext | ForkServerContext  # how a job's child process is started


@dataclass(frozen=True)
class LongJob:
    """What a handler returns to have its work done in a child process.

    ``target`` must be importable at module level (the child is spawned, not forked, so no
    Kafka sockets or threads leak into it) and its arguments picklable. The target reports a
    failure by raising; an exception with ``retryable=False`` (``uptake.errors.PermanentError``,
    say) marks it as one that no retry can fix. A job still running ``deadline_s`` seconds
    after it started is stopped and fails with reason ``deadline``.
    """

    target: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = "job"
    deadline_s: float = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not (self.deadline_s > 0 and math.isfinite(self.deadline_s)):
            raise ValueError(f"deadline_s must be a positive number, got {self.deadline_s!r}")


class JobOutcome(BaseModel):
    """How a job ended. ``reason``: ``error`` (the target raised), ``crashed`` (the child
    exited non-zero or was killed without a report) or ``deadline``."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    reason: Literal["error", "crashed", "deadline"] | None = None
    message: str | None = None
    retryable: bool = True
    truncated: bool = False  # ``message`` was cut to MESSAGE_CHARS
    # where the job was when it failed: the exception's own ``stage`` (a worker stage, say)
    stage: str | None = None


def _bounded(message: str) -> tuple[str, bool]:
    if len(message) <= MESSAGE_CHARS:
        return message, False
    return f"{message[:MESSAGE_CHARS]}… ({len(message) - MESSAGE_CHARS} more chars)", True


def _failure_of(exc: BaseException) -> JobOutcome:
    lines = traceback.format_exception_only(type(exc), exc)
    message, truncated = _bounded(encodable(lines[-1].strip()) if lines else type(exc).__name__)
    return JobOutcome(
        ok=False,
        reason="error",
        message=message,
        retryable=is_retryable(exc),
        truncated=truncated,
        stage=stage if isinstance(stage := getattr(exc, "stage", None), str) else None,
    )


def preloaded_context(modules: Sequence[str]) -> ForkServerContext:
    """A ``forkserver`` context whose server imports ``modules`` once, started now.

    A spawned child imports torch, transformers, TRL and MLflow again for every job: seconds
    each time, which a long-lived worker pays once this way. The server is a fresh process
    (started by spawning, never forked from the caller, so no Kafka socket or thread reaches
    it), and importing torch starts no CUDA context: every job forked from it still gets its
    own. A module that fails to import is only not preloaded; the child imports it as before.
    """
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(modules))
    forkserver.ensure_running()
    return ctx


def _child_main(conn: Connection, job: LongJob, env: dict[str, str]) -> None:
    # a forkserver child starts from the server's environment: take the parent's of now (a
    # token env var or CUDA_VISIBLE_DEVICES set after the server started)
    os.environ.clear()
    os.environ.update(env)
    try:
        job.target(*job.args, **job.kwargs)
    except BaseException as exc:
        conn.send(_failure_of(exc).model_dump())  # bounded: always fits the pipe's buffer
        conn.close()
        raise SystemExit(1) from None
    conn.close()


class ChildJob:
    """A started job: call ``done()`` until it says True, then read ``outcome``.

    ``done()`` never blocks for long: it drains the child's report, and enforces the deadline
    (SIGTERM, then SIGKILL ``grace_s`` later), so the caller keeps polling Kafka meanwhile.
    """

    def __init__(
        self, job: LongJob, *, grace_s: float = STOP_GRACE_S, context: JobContext | None = None
    ) -> None:
        ctx: JobContext = context or mp.get_context("spawn")
        self.job = job
        self._grace_s = grace_s
        self._reader, writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child_main, args=(writer, job, dict(os.environ)), name=job.name
        )
        self._process.start()
        writer.close()
        self._deadline = time.monotonic() + job.deadline_s
        self._terminated_at: float | None = None
        self._killed = False
        self._deadline_passed = False
        self._report: JobOutcome | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def done(self, wait_s: float = 0.0) -> bool:
        self._drain()
        self._process.join(timeout=wait_s)
        if self._process.is_alive():
            self._enforce_deadline()
            return False
        self._drain()
        self._close()
        return True

    def _enforce_deadline(self) -> None:
        now = time.monotonic()
        if self._terminated_at is None:
            if now >= self._deadline:
                self._deadline_passed = True
                self._terminated_at = now
                self._process.terminate()
        elif now - self._terminated_at >= self._grace_s:
            self._killed = True
            self._process.kill()

    def _drain(self) -> None:
        """Read the child's report as soon as it is there: a child blocked writing into a
        full pipe would never exit."""
        if self._closed or self._report is not None:
            return
        try:
            if self._reader.poll():
                self._report = JobOutcome.model_validate(self._reader.recv())
        except (EOFError, OSError):
            pass

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._reader.close()

    @property
    def outcome(self) -> JobOutcome:
        """How the job ended (call after ``done()`` returned True)."""
        if self._deadline_passed:
            how = f"killed ({self._grace_s:g} s after SIGTERM)" if self._killed else "stopped"
            return JobOutcome(
                ok=False,
                reason="deadline",
                message=f"deadline: {self.job.name} ran past its {self.job.deadline_s:g} s "
                f"deadline and was {how}",
                retryable=False,
            )
        code = self._process.exitcode
        if code == 0:
            return JobOutcome(ok=True)
        if self._report is not None:
            return self._report
        if code is not None and code < 0:
            return JobOutcome(
                ok=False, reason="crashed", message=f"job process killed by signal {-code}"
            )
        return JobOutcome(
            ok=False, reason="crashed", message=f"job process exited with code {code}"
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Terminate the child now (SIGTERM, then SIGKILL after ``grace_s``); blocks."""
        grace = self._grace_s if grace_s is None else grace_s
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(grace)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._drain()
        self._close()
