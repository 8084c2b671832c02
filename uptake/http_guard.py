"""Limits on what clients can hold of a uvicorn server: connections, slow headers, idle
keep-alive, and the log when the process runs out of file descriptors.

uvicorn by itself accepts every connection and waits for its headers and body for as long as
the client likes: 50 connections sending a body a byte at a time were held for more than a
minute, and with a lower file limit the server stopped answering altogether and wrote 95 MB of
"Too many open files" in seconds. Here:

- ``guarded_protocol`` is uvicorn's h11 protocol with a connection cap (one more connection is
  answered 503 and closed at once, before it costs more than its socket) and a deadline for a
  request's headers, from the connection (or from the first byte after an answer) to the end
  of the headers; past it the connection is closed. The body's deadline is the app's
  (``uptake.http_server.read_body``), and idle keep-alive is uvicorn's ``timeout_keep_alive``;
- ``fit_to_open_files`` raises the soft limit on open files towards the hard one and keeps the
  connection cap below it, so accepting never fails for lack of descriptors in the first place;
- ``OncePerInterval`` lets one message about exhausted resources through per interval (with
  the count of those it held back) on every handler of the root logger.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

RESERVED_FILES = 64  # descriptors kept for everything but client connections (models, pipes…)
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_TEXTS = ("Too many open files", "out of system resource")
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n"
    b"retry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n"
)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout_s: float
    keep_alive_s: float


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol bounded by ``limits`` (a class per server: the limits are its)."""

    refusals = _Tally(60.0)

    class GuardedH11Protocol(H11Protocol):
        _refused = False
        _deadline: asyncio.TimerHandle | None = None
        _seen_cycle: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.server_state.connections) >= limits.max_connections:
                self._refused = True
                transport.write(REFUSED)
                transport.close()
                count = refusals.add()
                if count:
                    log.warning(
                        "refused %d connection(s) in %gs: %d open, the limit",
                        count,
                        refusals.interval_s,
                        limits.max_connections,
                    )
                return
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._seen_cycle:
                self._seen_cycle = self.cycle  # its headers are complete: the app has it
                self._disarm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is in the app: its body deadline is the app's
            self.transport.close()

    return GuardedH11Protocol


class _Tally:
    """Counts events; ``add`` returns the count to report once per ``interval_s`` (else 0)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._count = 0
        self._last = -interval_s

    def add(self) -> int:
        self._count += 1
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return 0
        self._last, count, self._count = now, self._count, 0
        return count


def server_config(app: Any, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config bounded by ``limits`` (h11, whatever else is installed)."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        **kwargs,
    )


def fit_to_open_files(max_connections: int) -> int:
    """Raise the soft open-files limit towards what ``max_connections`` needs (up to the hard
    limit) and return the connection cap that fits under it, ``RESERVED_FILES`` kept free."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitted = max(1, soft - RESERVED_FILES)
    log.warning(
        "the open-files limit is %d: at most %d connections (not %d); raise `ulimit -n` for more",
        soft,
        fitted,
        max_connections,
    )
    return fitted


def is_resource_error(record: logging.LogRecord) -> bool:
    """The record reports running out of descriptors, buffers or memory."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return True
    try:
        text = record.getMessage()
    except Exception:  # a record whose arguments do not format: not ours to judge
        return False
    return any(t in text for t in RESOURCE_TEXTS)


class OncePerInterval(logging.Filter):
    """Lets one resource-exhaustion record through per ``interval_s`` (each logger apart);
    the next one that passes says how many were held back. Other records pass untouched."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_resource_error(record):
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(record.name)
            if last is not None and now - last < self.interval_s:
                self._held[record.name] = self._held.get(record.name, 0) + 1
                return False
            self._last[record.name] = now
            held = self._held.pop(record.name, 0)
        if held:
            text = record.getMessage()
            record.msg = f"{text} ({held} more like it in the last {self.interval_s:g}s)"
            record.args = ()
        record.exc_info = None  # one line: the traceback is the same every time
        record.exc_text = None
        return True


def quiet_resource_errors(interval_s: float = 60.0) -> OncePerInterval:
    """Install one ``OncePerInterval`` on every root handler (and the last-resort one);
    idempotent. Returns the filter in place."""
    handlers = [*logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    installed: OncePerInterval | None = None
    for handler in handlers:
        found = next((f for f in handler.filters if isinstance(f, OncePerInterval)), None)
        if found is None:
            found = installed or OncePerInterval(interval_s)
            handler.addFilter(found)
        installed = installed or found
    return installed or OncePerInterval(interval_s)
