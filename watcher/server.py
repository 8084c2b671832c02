"""The watcher's HTTP server: the shared threaded uvicorn server (``uptake.http_server``).

An unset port means 8790, or any free port when 8790 is taken (two local stacks, parallel test
runs); an explicit port must be free.
"""

from __future__ import annotations

from fastapi import FastAPI

from uptake.http_server import HttpServer as SharedHttpServer

DEFAULT_PORT = 8790


class HttpServer(SharedHttpServer):
    def __init__(self, app: FastAPI, host: str, port: int | None) -> None:
        super().__init__(app, host, port, name="watcher", default_port=DEFAULT_PORT)
