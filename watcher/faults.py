"""Why a poll failed: one exception type the scheduler understands, whatever the source."""

from __future__ import annotations

from typing import Literal

from uptake.errors import DependencyError
from uptake.urls import redact_urls

FaultKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "network",
    "too_large",
    "malformed",
    "http_error",
    "unavailable",
]


class SourceFault(DependencyError):
    """A poll that could not complete; nothing it saw is trusted or published (retried with
    backoff, whatever the kind).

    ``retry_after_s`` carries the server's ``Retry-After`` / ``RateLimit`` hint, which the
    backoff honours as a lower bound.
    """

    def __init__(
        self,
        kind: FaultKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        message = redact_urls(message)  # logged, stored, alerted: never with credentials
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
