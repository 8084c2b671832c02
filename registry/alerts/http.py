"""One HTTP POST of a formatted alert, classified for the retry policy."""

from __future__ import annotations

import httpx
from pydantic import BaseModel

from registry.alerts.model import SendResult


class ChannelNotReady(Exception):
    """The channel cannot be used at all (its secret is not in the environment)."""


class OutgoingRequest(BaseModel):
    url: str
    headers: dict[str, str]
    body: bytes


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def post(request: OutgoingRequest, timeout_s: float) -> SendResult:
    """2xx: ok. 429, 5xx, timeouts, refused connections: retry. Other 4xx: give up."""
    try:
        response = httpx.post(
            request.url, content=request.body, headers=request.headers, timeout=timeout_s
        )
    except httpx.HTTPError as exc:
        return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return SendResult(ok=True)
    text = response.text[:200]
    retryable = response.status_code == 429 or response.status_code >= 500
    return SendResult(
        ok=False,
        retryable=retryable,
        error=f"HTTP {response.status_code}: {text}",
        retry_after_s=_retry_after(response) if retryable else None,
    )
