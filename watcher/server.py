"""Serve the watcher's FastAPI app with uvicorn in a background thread.

The socket is bound here, before uvicorn starts, so a busy port is a clear error now rather
than a silent thread death. An unset port means 8790, or any free port when 8790 is taken
(two local stacks, or parallel test runs); an explicit port must be free.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from uptake.errors import DependencyError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8790


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bind_socket(host: str, port: int | None) -> socket.socket:
    if port is not None:
        try:
            return _bind(host, port)
        except OSError as exc:
            raise DependencyError(
                f"watcher cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
    try:
        return _bind(host, DEFAULT_PORT)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise DependencyError(
                f"watcher cannot listen on {host}:{DEFAULT_PORT}: {exc}"
            ) from None
    sock = _bind(host, 0)
    log.warning(
        "port %d is taken; the watcher listens on %d instead (set watcher.port to fix one)",
        DEFAULT_PORT,
        sock.getsockname()[1],
    )
    return sock


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int | None) -> None:
        self._sock = bind_socket(host, port)
        bound_host, bound_port = self._sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name="watcher-http",
            daemon=True,
        )

    def start(self, timeout_s: float = 10.0) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise DependencyError("the watcher's HTTP server stopped during start-up")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
