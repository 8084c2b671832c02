"""The HTTP client under ``huggingface_hub`` while a watcher source is calling the hub.

``huggingface_hub`` retries 429 and 5xx inside ``list_models`` (up to five times, sleeping
``Retry-After`` + 1 s each) and sends list requests without a timeout. A watcher needs the
opposite: one attempt per request, a timeout, and every failure visible to its own per-source
backoff, metrics and alerting. So the watcher installs (through the library's public
``set_client_factory``) a client whose transport, while a source's ``hub_scope`` is active:

- bounds every request as a whole by the source's ``timeout_s`` (``uptake.http_limits``: a
  server that drips one byte every 0.2 s never trips a per-read timeout, and would hold the
  source's lock forever) and its answer by ``max_response_bytes``, and counts it,
- refuses hosts other than the source's endpoint (the library also calls
  ``{HF_ENDPOINT}/api/agent-harnesses``; a watcher pointed at a mirror must not reach out to
  huggingface.co),
- turns 408/429/5xx, timeouts, network errors and oversize answers into ``SourceFault`` at
  once, the body's included (the client reads it after the transport returns): the exception
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

from uptake.http_limits import DeadlineError, SizeError, hub_transport, limits
from uptake.urls import redact_userinfo
from watcher.faults import FaultKind, SourceFault

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_DELAY_SECONDS = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is True


@dataclass(frozen=True)
class HubScope:
    source: str
    host: str  # host[:port] of the endpoint
    timeout_s: float  # each request, as a whole: connect, headers and body
    on_request: Callable[[], None]
    max_bytes: int = 16 << 20  # each answer's body


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


def _fault(where: str, scope: HubScope, exc: Exception) -> SourceFault:
    """The ``SourceFault`` for a limit hit or a transport error, wherever it was raised."""
    if isinstance(exc, SizeError):
        detail = str(exc).partition(": ")[2] or str(exc)
        return SourceFault("too_large", f"{where}: {detail} (max_response_bytes)")
    if isinstance(exc, DeadlineError):
        return SourceFault("timeout", f"{where}: no complete answer in {scope.timeout_s:g}s")
    if isinstance(exc, httpx2.TimeoutException):
        return SourceFault("timeout", f"{where}: no answer in {scope.timeout_s:g}s")
    return SourceFault("network", f"{where}: {type(exc).__name__}: {exc}")


_FAULTS = (DeadlineError, SizeError, httpx2.TransportError)


class _FaultingBody(httpx2.SyncByteStream):
    """The answer's body, whose limit and transport errors become ``SourceFault`` too: the
    client reads it after ``handle_request`` returns, and the library retries timeouts."""

    def __init__(self, inner: httpx2.SyncByteStream, where: str, scope: HubScope) -> None:
        self._inner = inner
        self._where = where
        self._scope = scope

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except _FAULTS as exc:
            raise _fault(self._where, self._scope, exc) from exc

    def close(self) -> None:
        self._inner.close()


class WatcherTransport(httpx2.BaseTransport):
    def __init__(self) -> None:
        self._inner = hub_transport()  # no limits of its own: a source's scope sets them

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
        with limits(deadline_s=scope.timeout_s, max_bytes=scope.max_bytes):
            try:
                response = self._inner.handle_request(request)
            except _FAULTS as exc:
                raise _fault(where, scope, exc) from exc
        response.stream = _FaultingBody(response.stream, where, scope)
        status = response.status_code
        if status in RETRYABLE_STATUS:
            try:
                response.read()
            finally:
                response.close()
            kind: FaultKind = "rate_limited" if status == 429 else "server_error"
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
