"""Hostile HTTP servers on loopback: one that drips its answer, one that answers too much.

Raw sockets, not a framework, so the test decides every byte and its timing: a framework
would buffer the drip or add its own timeouts.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

Mode = Literal["drip_body", "drip_headers", "flood", "declared_huge", "ok"]


class HostileServer:
    """Answers every request according to ``mode``:

    - ``drip_body``: headers at once (Content-Length 100000), then one body byte per
      ``interval_s``, closing after ``drip_bytes`` (so a client without a deadline ends too);
    - ``drip_headers``: the status line and headers one byte per ``interval_s``, as long;
    - ``flood``: a close-delimited 200 body of ``flood_bytes`` (no Content-Length), sent fast;
    - ``declared_huge``: a 200 declaring Content-Length of ``flood_bytes``, then the bytes;
    - ``ok``: ``body`` at once with status 200.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        interval_s: float = 0.2,
        drip_bytes: int = 100000,
        flood_bytes: int = 50 << 20,
        body: bytes = b'{"ok": true}',
    ) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self.drip_bytes = drip_bytes
        self.flood_bytes = flood_bytes
        self.body = body
        self.requests = 0
        self.sent = 0  # bytes sent, all connections
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            rest += chunk

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def _drip(self, conn: socket.socket, data: bytes) -> None:
        for i in range(min(len(data), self.drip_bytes)):
            if self._stop.wait(self.interval_s):
                return
            self._send(conn, data[i : i + 1])

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            self._read_request(conn)
            with self._lock:
                self.requests += 1
            if self.mode == "drip_body":
                self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                self._drip(conn, b"x" * 100000)
            elif self.mode == "drip_headers":
                self._drip(conn, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 100000)
            elif self.mode in ("flood", "declared_huge"):
                length = f"Content-Length: {self.flood_bytes}\r\n" if self.mode != "flood" else ""
                self._send(conn, f"HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n".encode())
                block = b"z" * 65536
                left = self.flood_bytes
                while left > 0 and not self._stop.is_set():
                    self._send(conn, block[:left])
                    left -= len(block)
            else:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\n"
                self._send(conn, head.encode() + b"Content-Type: application/json\r\n\r\n")
                self._send(conn, self.body)
        except OSError:
            pass  # the client gave up: what these servers are for
        finally:
            conn.close()


def elapsed(start: float) -> float:
    return time.monotonic() - start
