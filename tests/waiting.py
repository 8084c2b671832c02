"""``wait_for``: poll a condition until it holds, or fail the test saying what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "", poll_s: float = 0.2
) -> Any:
    """The predicate's first truthy value; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(poll_s)
