"""A loopback Hub that serves model files, for ``huggingface_hub.snapshot_download``.

The watcher's fake hub (tests/watcher/fake_hub.py) serves listings and model info only; the
worker downloads files, so this one serves what the real client asks for when the revision is
a commit sha: ``GET /api/models/{repo}/tree/{sha}`` (the file list), ``GET .../revision/{sha}``
(model info with siblings) and ``HEAD``/``GET /{repo}/resolve/{sha}/{path}`` (file metadata
headers and bytes). Repos are folders on disk. ``fail`` queues statuses (a 503, say) that the
next requests get instead of the real answer, ``down_for`` a 503 to everything for a while;
``log`` records every request, ``auth`` every Authorization header.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FileHub:
    repos: dict[tuple[str, str], Path] = field(default_factory=dict)  # (repo, sha) -> folder
    log: list[tuple[str, str, int]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)  # every Authorization header received
    faults: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_until: float = 0.0  # monotonic time until which every request gets a 503
    down_s: float = 0.0  # an outage that starts with the next request (``down_for``)

    def down_for(self, seconds: float) -> None:
        """Answer 503 to everything for ``seconds`` from the next request on (an outage, not a
        count; timed from the first request it meets, so a client that is slow to start, on a
        loaded machine, meets all of it)."""
        self.down_s = seconds

    def add(self, repo_id: str, folder: Path) -> str:
        """Serve ``folder`` as ``repo_id``; return its commit sha."""
        digest = hashlib.sha1(repo_id.encode())
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                digest.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
        sha = digest.hexdigest()
        self.repos[(repo_id, sha)] = folder
        return sha

    def fail(self, *statuses: int) -> None:
        with self.lock:
            self.faults.extend(statuses)

    def downloads(self, name: str) -> int:
        """How many times a file named ``name`` was downloaded (GET of its bytes)."""
        return sum(
            1
            for m, p, s in self.log
            if m == "GET" and "/resolve/" in p and p.endswith(f"/{name}") and s == 200
        )

    def __enter__(self) -> FileHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                with hub.lock:
                    hub.log.append((self.command, self.path, status))
                    if (value := self.headers.get("Authorization")) is not None:
                        hub.auth.append(value)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(
                self, status: int, data: object, headers: dict[str, str] | None = None
            ) -> None:
                body = json.dumps(data).encode()
                self._answer(status, body, {"Content-Type": "application/json", **(headers or {})})

            def _route(self) -> None:
                with hub.lock:
                    fault = hub.faults.pop(0) if hub.faults else None
                    if hub.down_s:
                        hub.down_until, hub.down_s = time.monotonic() + hub.down_s, 0.0
                if fault is None and time.monotonic() < hub.down_until:
                    fault = 503
                if fault is not None:
                    self._json(fault, {"error": "unavailable"})
                    return
                parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo, kind, sha = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
                    folder = hub.repos.get((repo, sha))
                    if folder is None:
                        self._json(
                            404, {"error": "not found"}, {"X-Error-Code": "RevisionNotFound"}
                        )
                        return
                    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
                    if kind == "tree":
                        self._json(
                            200,
                            [
                                {
                                    "type": "file",
                                    "path": p.relative_to(folder).as_posix(),
                                    "size": p.stat().st_size,
                                    "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                                }
                                for p in files
                            ],
                        )
                        return
                    siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in files]
                    self._json(200, {"id": repo, "sha": sha, "siblings": siblings})
                    return
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, sha, rel = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
                    folder = hub.repos.get((repo, sha))
                    path = folder / rel if folder is not None else None
                    if path is None or not path.is_file():
                        self._json(404, {"error": "no file"}, {"X-Error-Code": "EntryNotFound"})
                        return
                    data = path.read_bytes()
                    etag = hashlib.sha256(data).hexdigest()
                    self._answer(
                        200,
                        data,
                        {
                            "X-Repo-Commit": sha,
                            "ETag": f'"{etag}"',
                            "Content-Type": "application/octet-stream",
                        },
                    )
                    return
                self._json(404, {"error": "unknown"})

            do_GET = _route
            do_HEAD = _route

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
