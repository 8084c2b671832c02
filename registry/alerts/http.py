"""One HTTP POST of a formatted alert, classified for the retry policy.

Each attempt has a total deadline of the channel's ``timeout_s`` and reads at most
``MAX_RESPONSE_BYTES`` of an error answer (``uptake.http_limits``): a channel that drips its
reply or floods it delays only its own queue, by one timeout per attempt. A URL that can
never work (malformed, not http/https) fails the delivery at once, with the reason.
"""

from __future__ import annotations

import httpx
from pydantic import BaseModel

from registry.alerts.model import SendResult
from uptake.errors import ConfigError
from uptake.http_limits import ResponseTooLarge, limited_client

MAX_RESPONSE_BYTES = 64 << 10  # what a channel answers is only read for its first 200 chars


class ChannelNotReady(ConfigError):
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


def _error_text(response: httpx.Response) -> str:
    try:
        response.read()
    except ResponseTooLarge:
        return f"(answer over {MAX_RESPONSE_BYTES} bytes)"
    except httpx.HTTPError as exc:
        return f"(answer unreadable: {type(exc).__name__})"
    return response.text[:200]


def _bad_url(request: OutgoingRequest, exc: Exception) -> SendResult:
    # the URL may be a secret (a Slack webhook URL is one): never repeat it in the reason
    reason = str(exc).replace(request.url, "<url>")
    return SendResult(ok=False, retryable=False, error=f"invalid channel URL: {reason}")


def post(request: OutgoingRequest, timeout_s: float) -> SendResult:
    """2xx: ok. 429, 5xx, timeouts, refused connections: retry. Other 4xx, a bad URL: give up."""
    try:
        with (
            limited_client(
                deadline_s=timeout_s, max_bytes=MAX_RESPONSE_BYTES, timeout=timeout_s
            ) as client,
            client.stream(
                "POST", request.url, content=request.body, headers=request.headers
            ) as response,
        ):
            if 200 <= response.status_code < 300:
                return SendResult(ok=True)  # the answer's body is not needed
            text = _error_text(response)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return _bad_url(request, exc)
    except ResponseTooLarge as exc:
        return SendResult(ok=False, retryable=False, error=f"{type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
    retryable = response.status_code == 429 or response.status_code >= 500
    return SendResult(
        ok=False,
        retryable=retryable,
        error=f"HTTP {response.status_code}: {text}",
        retry_after_s=_retry_after(response) if retryable else None,
    )
