"""When ``uptake up`` restarts a component that exited on its own, and when it gives up.

Like compose's ``restart: unless-stopped``, but with a crash-loop limit: a component is
restarted after a backoff that doubles with each recent exit, and given up once it exited
``crash_loop_exits`` times within ``crash_loop_window_s`` — the rest of the stack stays up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from uptake.stack_config import StackSettings

State = Literal["running", "restarting", "failed", "stopped"]


class ComponentRecord(BaseModel):
    """One component as ``stack.json`` and ``uptake status`` show it."""

    pid: int | None = None
    started_ticks: int | None = None  # /proc start time: tells the pid from a reused one
    state: State = "running"
    restarts: int = 0
    last_exit: str | None = None  # "killed by SIGKILL: <last log line>"


class RestartTracker:
    """The exits of one component and what to do about the latest."""

    def __init__(self, cfg: StackSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.exits: deque[float] = deque()
        self.restarts = 0
        self.last_exit: str | None = None
        self.state: State = "running"
        self.restart_at: float | None = None
        self.running_since: float | None = clock()
        self.alert_open = False

    def exited(self, reason: str) -> float | None:
        """Record an exit; return the delay before the restart, or None: give up."""
        now = self.clock()
        self.exits.append(now)
        while self.exits and now - self.exits[0] > self.cfg.crash_loop_window_s:
            self.exits.popleft()
        self.last_exit = reason
        self.running_since = None
        if len(self.exits) >= self.cfg.crash_loop_exits:
            self.state, self.restart_at = "failed", None
            return None
        delay = min(
            self.cfg.restart_backoff_initial_s * 2.0 ** (len(self.exits) - 1),
            self.cfg.restart_backoff_max_s,
        )
        self.state, self.restart_at = "restarting", now + delay
        return delay

    def due(self) -> bool:
        return (
            self.state == "restarting"
            and self.restart_at is not None
            and (self.clock() >= self.restart_at)
        )

    def restarted(self) -> None:
        self.restarts += 1
        self.state, self.restart_at, self.running_since = "running", None, self.clock()

    def stable(self) -> bool:
        """Up for ``stable_after_s`` since its last restart (its alert can resolve)."""
        return (
            self.state == "running"
            and self.running_since is not None
            and self.clock() - self.running_since >= self.cfg.stable_after_s
        )
