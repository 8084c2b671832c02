"""A service's small HTTP face: a FastAPI app served by uvicorn in a background thread.

The socket is bound here, before uvicorn starts, so a busy port is a clear one-line error
now rather than a silent thread death, and port 0 (any free port) works. A service that has
a usual port (the watcher's 8790) passes it as ``default_port``: an unset port means that
one, or any free port when it is taken (two local stacks, parallel tests); an explicit port
must be free. ``alive`` tells a supervisor whether the server thread still runs.

``read_body`` reads a request body under a size cap, refusing a declared ``Content-Length``
over it before reading anything and stopping a chunked body as soon as it passes the cap, and
within a deadline when one is given (a client that sends its body a byte at a time would
otherwise hold the connection for as long as it likes).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
import time
from typing import Self

import uvicorn
from fastapi import FastAPI, Request

from uptake.errors import DependencyError, InputError

log = logging.getLogger(__name__)

MAX_LENGTH_DIGITS = 12  # a Content-Length longer than this is over any cap (and int() stays cheap)


class BodyTooLarge(InputError, ValueError):
    """The request body is over the cap: answer 413 without reading (more of) it."""


class BadContentLength(InputError, ValueError):
    """The Content-Length header is not a number: answer 400."""


class BodyTimeout(InputError, TimeoutError):
    """The body did not arrive within its deadline: answer 408 and close the connection."""


async def read_body(request: Request, max_bytes: int, *, timeout_s: float | None = None) -> bytes:
    """The body of ``request``, never holding more than ``max_bytes`` of it in memory, read
    within ``timeout_s`` (None: no deadline)."""
    if timeout_s is None:
        return await _read_body(request, max_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, max_bytes)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout_s:g}s") from None


async def _read_body(request: Request, max_bytes: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        length = length.strip()
        if not (length.isascii() and length.isdigit()):
            raise BadContentLength(f"Content-Length {length[:20]!r} is not a number")
        if len(length) > MAX_LENGTH_DIGITS or int(length) > max_bytes:
            raise BodyTooLarge(f"body of {length[:20]} bytes is over the {max_bytes}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(f"body is over the {max_bytes}-byte limit")
    return bytes(body)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bind_socket(host: str, port: int | None, *, name: str, default_port: int = 0) -> socket.socket:
    """A listening socket on ``port``, or on ``default_port`` (else any free one) if unset."""
    if port is not None or default_port == 0:
        wanted = default_port if port is None else port
        try:
            return _bind(host, wanted)
        except OSError as exc:
            raise DependencyError(
                f"{name} cannot listen on {host}:{wanted}: {exc.strerror or exc}"
            ) from None
    try:
        return _bind(host, default_port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise DependencyError(
                f"{name} cannot listen on {host}:{default_port}: {exc.strerror or exc}"
            ) from None
    sock = _bind(host, 0)
    log.warning(
        "port %d is taken; %s listens on %d instead (set its port to choose one)",
        default_port,
        name,
        sock.getsockname()[1],
    )
    return sock


def _connectable(host: str) -> str:
    """The address a client on this machine uses for ``host`` (a wildcard is not one)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class HttpServer:
    """``app`` served by uvicorn in a daemon thread named after the service."""

    def __init__(
        self, app: FastAPI, host: str, port: int | None, *, name: str, default_port: int = 0
    ) -> None:
        self.name = name
        self._sock = bind_socket(host, port, name=name, default_port=default_port)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{_connectable(host)}:{self.port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"{name}-http",
            daemon=True,
        )

    @property
    def alive(self) -> bool:
        """Started and still serving (False once its thread ended, for whatever reason)."""
        return self._server.started and self.thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> Self:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self.thread.is_alive():
                raise DependencyError(f"the HTTP server of {self.name} stopped during start-up")
            if time.monotonic() > deadline:
                raise DependencyError(
                    f"the HTTP server of {self.name} did not start within {timeout_s:g}s"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self._sock.close()
