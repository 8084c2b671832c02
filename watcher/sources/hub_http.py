"""The HTTP client under ``huggingface_hub`` while a watcher source is calling the hub.

``huggingface_hub`` retries 429 and 5xx inside ``list_models`` (up to five times, sleeping
``Retry-After`` + 1 s each) and sends list requests without a timeout. A watcher needs the
opposite: one attempt per request, a timeout, and every failure visible to its own per-source
backoff, metrics and alerting. So the watcher installs (through the library's public
``set_client_factory``) a client whose transport, while a source's ``hub_scope`` is active:

- sets the source's timeout on every request and counts it,
- refuses hosts other than the source's endpoint (the library also calls
  ``{HF_ENDPOINT}/api/agent-harnesses``; a watcher pointed at a mirror must not reach out to
  huggingface.co),
- turns 408/429/5xx, timeouts and network errors into ``SourceFault`` at once: the exception
  is not one the library retries, so it surfaces from ``list_models`` after one attempt.

Outside a scope (other code in the same process) requests pass through unchanged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils import parse_ratelimit_headers
from huggingface_hub.utils._http import hf_request_event_hook

from uptake.urls import redact_userinfo
from watcher.faults import SourceFault

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_DELAY_SECONDS = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is True


@dataclass(frozen=True)
class HubScope:
    source: str
    host: str  # host[:port] of the endpoint
    timeout_s: float
    on_request: Callable[[], None]


_scope: ContextVar[HubScope | None] = ContextVar("uptake_watcher_hub_scope", default=None)
_installed = False
_install_lock = threading.Lock()


def retry_after_s(headers: httpx2.Headers) -> float | None:
    """Seconds the server asked us to wait: ``RateLimit`` (IETF draft) or ``Retry-After``
    (delay-seconds or an HTTP-date). Unbounded here; the backoff clamps it to ``backoff_max_s``."""
    try:
        info = parse_ratelimit_headers(headers)
    except (ValueError, OverflowError):
        info = None
    hint: float | None = None
    if info is not None and info.remaining == 0:
        hint = float(info.reset_in_seconds)
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        seconds: float | None = None
        if _DELAY_SECONDS.fullmatch(value):
            seconds = float(value)  # a thousand digits: inf, which the clamp handles
        else:
            try:
                when = parsedate_to_datetime(value)
                if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
                    when = when.replace(tzinfo=UTC)
                seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError, OverflowError, IndexError):
                seconds = None
        if seconds is not None:
            hint = max(hint or 0.0, seconds)
    return hint


class WatcherTransport(httpx2.BaseTransport):
    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        scope = _scope.get()
        if scope is None:
            return self._inner.handle_request(request)
        host = request.url.netloc.decode("ascii")
        if host != scope.host:
            raise SourceFault("network", f"refused request to {host}: not the source endpoint")
        request.extensions["timeout"] = httpx2.Timeout(scope.timeout_s).as_dict()
        scope.on_request()
        where = f"{request.method} {redact_userinfo(str(request.url.copy_with(query=None)))}"
        try:
            response = self._inner.handle_request(request)
        except httpx2.TimeoutException as exc:
            raise SourceFault("timeout", f"{where}: no answer in {scope.timeout_s:g}s") from exc
        except httpx2.TransportError as exc:
            raise SourceFault("network", f"{where}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status in RETRYABLE_STATUS:
            try:
                response.read()
            finally:
                response.close()
            kind = "rate_limited" if status == 429 else "server_error"
            hint = retry_after_s(response.headers)
            wait = f" (retry after {hint:g}s)" if hint is not None else ""
            raise SourceFault(
                kind, f"{where}: HTTP {status}{wait}", status=status, retry_after_s=hint
            )
        return response

    def close(self) -> None:
        self._inner.close()


def _client() -> httpx2.Client:
    # Same as huggingface_hub's default client, with our transport underneath.
    return httpx2.Client(
        transport=WatcherTransport(),
        event_hooks={"request": [hf_request_event_hook]},
        follow_redirects=True,
        timeout=None,
    )


def install() -> None:
    """Put the watcher transport under huggingface_hub (once per process)."""
    global _installed
    with _install_lock:
        if not _installed:
            set_client_factory(_client)
            _installed = True


@contextmanager
def hub_scope(scope: HubScope) -> Iterator[None]:
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)
