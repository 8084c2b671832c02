"""A loopback TCP forwarder in front of MLflow that can go down: every open connection cut
and every new one refused for a while, as when the MLflow server restarts or its node is
lost. ``down_after`` takes it down when a request carries a marker (a stage tag, say);
``hold`` keeps a request that carries a marker until the test lets it through."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress
from urllib.parse import urlsplit

from uptake.stack.process import free_port


class OutageProxy:
    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        assert up.hostname is not None and up.port is not None
        self.upstream = (up.hostname, up.port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.outages: list[tuple[float, float]] = []  # (start, end) monotonic
        self._marker: bytes | None = None
        self._held: tuple[bytes, threading.Event, float] | None = None
        self._outage_s = 0.0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._up = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def down_after(self, marker: bytes, outage_s: float) -> None:
        """Go down for ``outage_s`` once a client sends ``marker`` (once)."""
        self._marker, self._outage_s = marker, outage_s

    def hold(self, marker: bytes, until: threading.Event, at_most_s: float) -> None:
        """Keep the request that carries ``marker`` until ``until`` is set (or ``at_most_s``
        passed); every other request goes through meanwhile."""
        self._held = (marker, until, at_most_s)

    def __enter__(self) -> OutageProxy:
        self._up.set()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._cut()
        self._thread.join(5)

    def _cut(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                s.close()

    def _outage(self) -> None:
        time.sleep(0.5)  # let the marked request be answered first
        start = time.monotonic()
        self._up.clear()
        self._cut()
        time.sleep(self._outage_s)
        self.outages.append((start, time.monotonic()))
        self._up.set()

    def _pipe(self, a: socket.socket, b: socket.socket, watch: bool) -> None:
        try:
            while data := a.recv(65536):
                if watch and self._held is not None and self._held[0] in data:
                    _marker, until, at_most_s = self._held
                    until.wait(at_most_s)
                if watch and self._marker is not None and self._marker in data:
                    self._marker = None
                    threading.Thread(target=self._outage, daemon=True).start()
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._up.wait(0.1):
                continue  # nothing listens: connections are refused
            with socket.create_server(("127.0.0.1", self.port)) as srv:
                srv.settimeout(0.1)
                while self._up.is_set() and not self._stop.is_set():
                    try:
                        conn, _ = srv.accept()
                    except TimeoutError:
                        continue
                    back = socket.create_connection(self.upstream)
                    with self._lock:
                        self._conns.update((conn, back))
                    for args in ((conn, back, True), (back, conn, False)):
                        threading.Thread(target=self._pipe, args=args, daemon=True).start()
