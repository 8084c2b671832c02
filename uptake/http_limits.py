"""Outbound HTTP with a total deadline and a response-size cap, for httpx and httpx2.

httpx's timeouts bound each socket operation, not the call: a server that sends one byte
every 0.2 s never trips a 5 s read timeout, and holds whoever waits on it (a source lock, an
evaluation, an alert queue) forever, while a server that answers with gigabytes fills memory.
``LimitedTransport`` gives every connect, write and read only the time left before the call's
deadline, and counts the body's bytes as they arrive, so a call ends within ``deadline_s``
and never buffers more than ``max_bytes``. It raises ``DeadlineExceeded`` (an
``httpx.TimeoutException``) or ``ResponseTooLarge`` (an ``httpx.HTTPError``), so code that
already handles httpx errors keeps working.

Limits come from two places, and the tighter wins:

- the transport, per request: ``limited_client(deadline_s=10, max_bytes=1 << 20)``;
- a scope, for every request made inside it on this thread or task, retries included:
  ``with limits(deadline_s=60, max_bytes=8 << 20): api.model_info(...)``.

``hub_transport`` is the same transport for httpx2, the fork huggingface_hub 2.x uses.
Under a size cap the transport asks for ``Accept-Encoding: identity`` and refuses an encoded
body: its decoded size could be far above the bytes counted. Name resolution is not bounded
(the system resolver keeps its own timeouts).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import httpcore
import httpx

from uptake.errors import DependencyError

T = TypeVar("T")


class LimitError(DependencyError):
    """Base of both limits, whichever httpx flavour raised them: the other side was too slow or
    sent too much (retryable, as any failed dependency)."""

    # the request it failed on, set where it is raised (httpx's own errors carry one); an
    # annotation only, so httpx's ``request`` property stays in charge of its flavours
    request: Any


class DeadlineError(LimitError):
    """The call did not complete within its total deadline."""


class SizeError(LimitError):
    """The response body was larger than the cap (or encoded, so it could not be counted)."""


class DeadlineExceeded(DeadlineError, httpx.TimeoutException):
    """httpx flavour of ``DeadlineError``."""


class ResponseTooLarge(SizeError, httpx.HTTPError):
    """httpx flavour of ``SizeError``."""


@dataclass(frozen=True)
class _Scope:
    deadline: float | None = None  # time.monotonic() by which the scope must be over
    deadline_s: float | None = None  # as configured, for messages
    max_bytes: int | None = None


@dataclass
class _Budget:
    """What one request may still spend: time until ``deadline``, bytes up to ``max_bytes``."""

    what: str  # "POST http://host:port": never the path or query, which may carry a secret
    deadline: float | None
    deadline_s: float | None
    max_bytes: int | None
    received: int = 0

    def expired_message(self) -> str:
        return f"{self.what}: no complete response within the {self.deadline_s:g} s deadline"


_NO_SCOPE = _Scope()
_scope: ContextVar[_Scope | None] = ContextVar("uptake_http_scope", default=None)
_current: ContextVar[_Budget | None] = ContextVar("uptake_http_budget", default=None)


def _tighter(a: _Scope, b: _Scope) -> _Scope:
    pick = a if b.deadline is None or (a.deadline is not None and a.deadline <= b.deadline) else b
    caps = [c for c in (a.max_bytes, b.max_bytes) if c is not None]
    return _Scope(pick.deadline, pick.deadline_s, min(caps) if caps else None)


def _relative(deadline_s: float | None, max_bytes: int | None) -> _Scope:
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    return _Scope(deadline, deadline_s, max_bytes)


@contextlib.contextmanager
def limits(*, deadline_s: float | None = None, max_bytes: int | None = None) -> Iterator[None]:
    """Bound every limited request made inside: all of them end by ``deadline_s`` from now,
    each reads at most ``max_bytes``. Nested scopes combine (the tighter limit wins)."""
    if deadline_s is not None and deadline_s <= 0:
        raise ValueError("deadline_s must be > 0")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    token = _scope.set(_tighter(_scope.get() or _NO_SCOPE, _relative(deadline_s, max_bytes)))
    try:
        yield
    finally:
        _scope.reset(token)


def _describe(url: Any, method: str) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{method} {url.scheme}://{url.host}{port}"


@dataclass(frozen=True)
class _Flavour:
    """The limited transport built for one httpx flavour (httpx or httpx2)."""

    transport: type[Any]  # a subclass of the flavour's HTTPTransport, built at import
    deadline_exceeded: type[DeadlineError]
    response_too_large: type[SizeError]


def _build(
    hx: ModuleType,
    core: ModuleType,
    deadline_cls: type[DeadlineError],
    size_cls: type[SizeError],
) -> _Flavour:
    def bounded(call: Callable[[float | None], T], timeout: float | None) -> T:
        """Run one socket operation with at most the time left before the deadline."""
        budget = _current.get()
        if budget is None or budget.deadline is None:
            return call(timeout)
        left = budget.deadline - time.monotonic()
        if left <= 0:
            raise deadline_cls(budget.expired_message())
        try:
            return call(left if timeout is None else min(timeout, left))
        except core.TimeoutException:
            if budget.deadline - time.monotonic() <= 0.01:  # ours, not the per-read timeout
                raise deadline_cls(budget.expired_message()) from None
            raise

    class Stream(core.NetworkStream):  # type: ignore[misc,name-defined]  # base known at run time
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = bounded(lambda t: self._inner.read(max_bytes, t), timeout)
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            bounded(lambda t: self._inner.write(buffer, t), timeout)

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> Stream:
            return Stream(
                bounded(lambda t: self._inner.start_tls(ssl_context, server_hostname, t), timeout)
            )

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(core.NetworkBackend):  # type: ignore[misc,name-defined]  # base known at run time
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Any = None,
        ) -> Stream:
            return Stream(
                bounded(
                    lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options),
                    timeout,
                )
            )

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Any = None
        ) -> Stream:
            return Stream(
                bounded(lambda t: self._inner.connect_unix_socket(path, t, socket_options), timeout)
            )

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    def too_large(budget: _Budget, detail: str) -> SizeError:
        return size_cls(f"{budget.what}: response {detail} (limit {budget.max_bytes} bytes)")

    class Body(hx.SyncByteStream):  # type: ignore[misc,name-defined]  # base known at run time
        """The response body, read under the request's budget and counted against its cap."""

        def __init__(self, inner: Any, budget: _Budget, request: Any) -> None:
            self._inner = inner
            self._budget = budget
            self._request = request

        def __iter__(self) -> Iterator[bytes]:
            chunks = iter(self._inner)
            budget = self._budget
            while True:
                token = _current.set(budget)
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except LimitError as exc:
                    exc.request = self._request
                    raise
                finally:
                    _current.reset(token)
                budget.received += len(chunk)
                if budget.max_bytes is not None and budget.received > budget.max_bytes:
                    err = too_large(budget, f"body over {budget.max_bytes} bytes")
                    err.request = self._request
                    raise err
                yield chunk

        def close(self) -> None:
            self._inner.close()

    class Transport(hx.HTTPTransport):  # type: ignore[misc,name-defined]  # base known at run time
        """An ``HTTPTransport`` (same keyword arguments) whose requests obey a deadline and a
        size cap: the transport's own (per request) and the enclosing ``limits()`` scope's."""

        def __init__(
            self,
            *,
            deadline_s: float | None = None,
            max_bytes: int | None = None,
            **kwargs: Any,
        ) -> None:
            if deadline_s is not None and deadline_s <= 0:
                raise ValueError("deadline_s must be > 0")
            super().__init__(**kwargs)
            pool = self._pool
            if not hasattr(pool, "_network_backend"):  # pragma: no cover - guards an upgrade
                raise RuntimeError(f"{hx.__name__} changed: cannot bound its connection pool")
            pool._network_backend = Backend(pool._network_backend)
            self.deadline_s = deadline_s
            self.max_bytes = max_bytes

        def handle_request(self, request: Any) -> Any:
            scope = _tighter(_scope.get() or _NO_SCOPE, _relative(self.deadline_s, self.max_bytes))
            budget = _Budget(
                _describe(request.url, request.method),
                scope.deadline,
                scope.deadline_s,
                scope.max_bytes,
            )
            if budget.max_bytes is not None:
                request.headers["Accept-Encoding"] = "identity"
            token = _current.set(budget)
            try:
                response = super().handle_request(request)
            except LimitError as exc:
                exc.request = request
                raise
            finally:
                _current.reset(token)
            if budget.max_bytes is not None:
                problem = _head_problem(response.headers, budget.max_bytes)
                if problem:
                    response.close()
                    err = too_large(budget, problem)
                    err.request = request
                    raise err
            response.stream = Body(response.stream, budget, request)
            return response

    return _Flavour(Transport, deadline_cls, size_cls)


def _head_problem(headers: Any, max_bytes: int) -> str | None:
    """Refuse early what the headers already show: a declared size over the cap, an encoding."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return f"is {encoding}-encoded although identity was asked (its size cannot be capped)"
    length = headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        return f"declares {int(length)} bytes"
    return None


_HTTPX = _build(httpx, httpcore, DeadlineExceeded, ResponseTooLarge)
LimitedTransport: type[Any] = _HTTPX.transport


def limited_client(
    *, deadline_s: float | None, max_bytes: int | None, **client_kwargs: Any
) -> httpx.Client:
    """An ``httpx.Client`` whose every request ends within ``deadline_s`` and reads at most
    ``max_bytes``; ``client_kwargs`` go to ``httpx.Client`` (``timeout`` stays per read)."""
    transport_kwargs = {k: client_kwargs.pop(k) for k in ("verify", "cert") if k in client_kwargs}
    transport = LimitedTransport(deadline_s=deadline_s, max_bytes=max_bytes, **transport_kwargs)
    return httpx.Client(transport=transport, **client_kwargs)


@functools.cache
def _httpx2() -> _Flavour:
    import httpcore2
    import httpx2

    class HubDeadlineExceeded(DeadlineError, httpx2.TimeoutException):
        """httpx2 flavour of ``DeadlineError``."""

    class HubResponseTooLarge(SizeError, httpx2.HTTPError):
        """httpx2 flavour of ``SizeError``."""

    return _build(httpx2, httpcore2, HubDeadlineExceeded, HubResponseTooLarge)


def hub_transport(
    *, deadline_s: float | None = None, max_bytes: int | None = None, **kwargs: Any
) -> Any:
    """``LimitedTransport`` for httpx2 (huggingface_hub 2.x): pass it to an ``httpx2.Client``
    returned by the factory given to ``huggingface_hub.set_client_factory``."""
    return _httpx2().transport(deadline_s=deadline_s, max_bytes=max_bytes, **kwargs)
