"""A Hugging Face Hub look-alike on loopback, serving the Hub API's real JSON shapes.

Enough of the Hub for the watcher and the real ``huggingface_hub`` client:

- ``GET /api/models?author=&search=&sort=createdAt|lastModified&limit=&expand=...`` newest
  first; with ``expand`` only the expanded properties (plus ``_id`` and ``id``) are returned,
  as on the Hub; pages of at most 1000 items linked by a ``Link: <...>; rel="next"`` header.
- ``GET /api/models/{org}/{name}`` and ``.../revision/{sha}``: the full model info (sha,
  siblings, config, cardData, safetensors, tags, gated, ...); 404s carry the Hub's
  ``X-Error-Code`` (``RepoNotFound`` / ``RevisionNotFound``) so the client raises its own errors.
- Faults on demand (status codes with headers, slow answers, malformed JSON, the real answer
  dripped one byte every ``drip_s`` or padded to ``size`` bytes), a request log, and ``/_admin``
  endpoints so a benchmark can drive a hub running in another process.

Run standalone: ``python -m tests.watcher.fake_hub --authors 200 --repos 20000``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

PAGE_SIZE = 1000
DEFAULT_FIELDS = (
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
)
_counter = itertools.count()


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def new_sha(seed: str) -> str:
    return hashlib.sha1(f"{seed}:{next(_counter)}:{time.time_ns()}".encode()).hexdigest()


@dataclass
class FakeRepo:
    id: str
    created_at: datetime
    sha: str
    last_modified: datetime
    pipeline_tag: str | None = "text-generation"
    library_name: str | None = "transformers"
    license: str | None = "apache-2.0"
    gated: bool | str = False
    private: bool = False
    params: int | None = 1_500_000_000
    files: list[str] = field(
        default_factory=lambda: ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    )
    config: dict[str, Any] = field(
        default_factory=lambda: {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    )
    extra_tags: list[str] = field(default_factory=list)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha -> state at that sha

    @property
    def author(self) -> str:
        return self.id.split("/", 1)[0]

    def snapshot(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "params": self.params,
            "config": dict(self.config),
            "last_modified": self.last_modified,
        }

    def tags(self, state: dict[str, Any] | None = None) -> list[str]:
        state = state or self.snapshot()
        tags = []
        if self.library_name:
            tags.append(self.library_name)
        if any(f.endswith(".safetensors") for f in state["files"]):
            tags.append("safetensors")
        if state["config"].get("model_type"):
            tags.append(state["config"]["model_type"])
        if self.pipeline_tag:
            tags.append(self.pipeline_tag)
        if state["config"].get("auto_map"):
            tags.append("custom_code")
        tags.extend(self.extra_tags)
        if self.license:
            tags.append(f"license:{self.license}")
        tags.append("region:us")
        return tags

    def _oid(self) -> str:
        return hashlib.md5(self.id.encode()).hexdigest()[:24]

    def _safetensors(self, state: dict[str, Any]) -> dict[str, Any] | None:
        if state["params"] is None or not any(f.endswith(".safetensors") for f in state["files"]):
            return None
        return {"parameters": {"BF16": state["params"]}, "total": state["params"]}

    def list_item(self, expand: list[str]) -> dict[str, Any]:
        state = self.snapshot()
        full = {
            "author": self.author,
            "createdAt": iso(self.created_at),
            "lastModified": iso(self.last_modified),
            "sha": self.sha,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "tags": self.tags(state),
            "gated": self.gated,
            "private": self.private,
            "downloads": 0,
            "likes": 0,
            "trendingScore": 0,
            "safetensors": self._safetensors(state),
            "config": state["config"],
            "cardData": {"license": self.license} if self.license else {},
            "siblings": [{"rfilename": f} for f in state["files"]],
        }
        item: dict[str, Any] = {"_id": self._oid(), "id": self.id}
        for key in expand or DEFAULT_FIELDS:
            if key in full and full[key] is not None:
                item[key] = full[key]
        if not expand:
            item["modelId"] = self.id
        return item

    def info(self, sha: str) -> dict[str, Any]:
        state = self.history[sha]
        card = {"license": self.license} if self.license else {}
        if self.library_name:
            card["library_name"] = self.library_name
        info = {
            "_id": self._oid(),
            "id": self.id,
            "modelId": self.id,
            "author": self.author,
            "sha": sha,
            "lastModified": iso(state["last_modified"]),
            "createdAt": iso(self.created_at),
            "private": self.private,
            "disabled": False,
            "gated": self.gated,
            "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name,
            "tags": self.tags(state),
            "downloads": 0,
            "likes": 0,
            "cardData": card,
            "config": state["config"],
            "transformersInfo": {
                "auto_model": "AutoModelForCausalLM",
                "pipeline_tag": self.pipeline_tag,
                "processor": "AutoTokenizer",
            },
            "siblings": [{"rfilename": f} for f in state["files"]],
            "spaces": [],
            "usedStorage": 1234,
        }
        if (st := self._safetensors(state)) is not None:
            info["safetensors"] = st
        return info


@dataclass
class Fault:
    """Answer matching requests wrongly, ``times`` times (None: until cleared)."""

    # status | slow | malformed | bad_shape | bad_item | body | drip | oversize
    kind: str = "status"
    status: int = 500
    body: bytes = b""  # kind "body": answered as is, with status 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drip_s: float = 0.2  # kind "drip": the real answer, one body byte every drip_s
    size: int = 0  # kind "oversize": the real answer padded with JSON whitespace to size bytes
    chunked: bool = False  # kind "oversize": no Content-Length, chunked transfer encoding
    times: int | None = 1
    match: Callable[[str, dict[str, list[str]]], bool] = lambda path, query: True
    hits: int = 0


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    at: float  # time.monotonic()
    status: int = 0
    authorization: str | None = None  # the Authorization header, to check token forwarding


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.by_author: dict[str, list[str]] = {}
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self.page_size = PAGE_SIZE
        self.lock = threading.RLock()
        self._last_created = datetime(2024, 1, 1, tzinfo=UTC)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- data -------------------------------------------------------------------------------

    def add(self, repo_id: str, *, created_at: datetime | None = None, **kw: Any) -> FakeRepo:
        """A new repo, newer than every other unless ``created_at`` is given."""
        with self.lock:
            if created_at is None:
                now = datetime.now(UTC)
                created_at = max(now, self._last_created + timedelta(milliseconds=1))
            self._last_created = max(self._last_created, created_at)
            repo = FakeRepo(
                id=repo_id,
                created_at=created_at,
                sha=new_sha(repo_id),
                last_modified=created_at,
                **kw,
            )
            repo.history[repo.sha] = repo.snapshot()
            self.repos[repo_id] = repo
            ids = self.by_author.setdefault(repo.author, [])
            ids.append(repo_id)
            ids.sort(key=lambda r: self.repos[r].created_at, reverse=True)
            return repo

    def commit(self, repo_id: str, **changes: Any) -> str:
        """A new commit: new sha, lastModified now, optionally new files/params/config."""
        with self.lock:
            repo = self.repos[repo_id]
            for key, value in changes.items():
                setattr(repo, key, value)
            repo.sha = new_sha(repo_id)
            repo.last_modified = datetime.now(UTC)
            repo.history[repo.sha] = repo.snapshot()
            return repo.sha

    def remove(self, repo_id: str) -> None:
        with self.lock:
            repo = self.repos.pop(repo_id)
            self.by_author[repo.author].remove(repo_id)

    def fail(self, **kw: Any) -> Fault:
        fault = Fault(**kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests_for(self, prefix: str = "/api/models") -> list[RequestRecord]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def list_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests_for("/api/models") if r.path == "/api/models"]

    def info_requests(self) -> list[RequestRecord]:
        return [r for r in self.requests_for("/api/models/")]

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    def _fault_for(self, path: str, query: dict[str, list[str]]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                if fault.match(path, query):
                    fault.hits += 1
                    return fault
        return None

    # -- API --------------------------------------------------------------------------------

    def list_models(self, query: dict[str, list[str]], base: str) -> tuple[Any, dict[str, str]]:
        author = (query.get("author") or [None])[0]
        search = ((query.get("search") or [""])[0]).lower()
        sort = (query.get("sort") or [""])[0]
        limit = int((query.get("limit") or ["0"])[0]) or None
        offset = int((query.get("cursor") or ["0"])[0])
        expand = query.get("expand") or query.get("expand[]") or []
        with self.lock:
            ids = list(self.by_author.get(author, [])) if author is not None else list(self.repos)
            repos = [  # anonymous listing: public repos only
                self.repos[i] for i in ids if search in i.lower() and not self.repos[i].private
            ]
            if sort == "lastModified":
                repos.sort(key=lambda r: r.last_modified, reverse=True)
            else:
                repos.sort(key=lambda r: r.created_at, reverse=True)
            if limit is not None:
                repos = repos[:limit]
            size = min(limit or self.page_size, self.page_size)
            page = [r.list_item(expand) for r in repos[offset : offset + size]]
        headers = {}
        if offset + size < len(repos):
            nxt = {k: v for k, v in query.items() if k != "cursor"}
            nxt["cursor"] = [str(offset + size)]
            headers["Link"] = f'<{base}/api/models?{urlencode(nxt, doseq=True)}>; rel="next"'
        return page, headers

    def model_info(self, repo_id: str, revision: str | None) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            repo = self.repos.get(repo_id)
            if repo is None or repo.private:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            sha = repo.sha if revision in (None, "main") else revision
            if sha not in repo.history:
                return (
                    404,
                    {"error": f"Invalid rev id: {revision}"},
                    {"X-Error-Code": "RevisionNotFound"},
                )
            return 200, repo.info(sha), {}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls
    shape: Fault | None = None  # a drip/oversize fault: how the real answer is sent

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        shape = self.shape
        if shape is not None and shape.kind == "oversize":
            body += b" " * max(0, shape.size - len(body))  # trailing whitespace: still JSON
        chunked = shape is not None and shape.kind == "oversize" and shape.chunked
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if shape is not None and shape.kind == "drip":
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(shape.drip_s)
            elif chunked:
                for i in range(0, len(body), 64 << 10):
                    chunk = body[i : i + (64 << 10)]
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def do_GET(self) -> None:
        self.shape = None  # one handler serves every request of a kept-alive connection
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        record = RequestRecord(
            "GET", path, query, time.monotonic(), authorization=self.headers.get("Authorization")
        )
        hub = self.fake
        if not path.startswith("/_admin"):
            with hub.lock:
                hub.requests.append(record)
        if path.startswith("/_admin"):
            self._admin_get(path)
            return
        fault = hub._fault_for(path, query) if path.startswith("/api/") else None
        if fault is not None and fault.kind in ("drip", "oversize"):
            self.shape, fault = fault, None  # the real answer, sent slowly or padded
        if fault is not None:
            record.status = self._answer_fault(fault)
            return
        base = f"http://{self.headers.get('Host')}"
        if path == "/api/models":
            page, headers = hub.list_models(query, base)
            record.status = 200
            self._json(200, page, headers)
            return
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :].split("/")
            revision = None
            if len(rest) == 4 and rest[2] == "revision":
                revision = rest[3]
            elif len(rest) != 2:
                record.status = 404
                self._json(404, {"error": "Not found"})
                return
            status, data, headers = hub.model_info(f"{rest[0]}/{rest[1]}", revision)
            record.status = status
            self._json(status, data, headers)
            return
        record.status = 404
        self._json(404, {"error": "Not found"})

    def _answer_fault(self, fault: Fault) -> int:
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.kind == "malformed":
            self._send(200, b'[{"_id": "x", "id": "acme/bro', fault.headers)
            return 200
        if fault.kind == "bad_shape":
            self._json(200, {"error": "unexpected"}, fault.headers)
            return 200
        if fault.kind == "bad_item":
            self._json(200, [{"_id": "x", "createdAt": "yesterday-ish"}], fault.headers)
            return 200
        if fault.kind == "body":
            self._send(200, fault.body, fault.headers)
            return 200
        if fault.kind == "slow":
            self._json(200, [], fault.headers)
            return 200
        self._json(fault.status, {"error": f"fake fault {fault.status}"}, fault.headers)
        return fault.status

    # -- admin (benchmarks drive a hub in another process) -----------------------------------

    def _admin_get(self, path: str) -> None:
        hub = self.fake
        if path == "/_admin/stats":
            with hub.lock:
                self._json(
                    200,
                    {
                        "repos": len(hub.repos),
                        "list_requests": len(hub.list_requests()),
                        "info_requests": len(hub.info_requests()),
                        "requests": len(hub.requests),
                    },
                )
            return
        self._json(404, {"error": "unknown admin path"})

    def do_POST(self) -> None:
        self.shape = None
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        hub = self.fake
        path = urlsplit(self.path).path
        if path == "/_admin/repos":
            repo = hub.add(body.pop("id"), **body)
            self._json(201, {"id": repo.id, "sha": repo.sha, "createdAt": iso(repo.created_at)})
        elif path == "/_admin/reset_log":
            hub.clear_log()
            self._json(200, {})
        else:
            self._json(404, {"error": "unknown admin path"})


def populate(hub: FakeHub, authors: int, repos: int) -> None:
    """``repos`` repos spread over ``authors`` orgs, created over the past year."""
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / max(repos, 1)
    for i in range(repos):
        author = f"org{i % authors:04d}"
        kind = i % 10
        kw: dict[str, Any] = {}
        if kind == 7:
            kw["pipeline_tag"] = "text-to-image"
            kw["library_name"] = "diffusers"
        elif kind == 8:
            kw["extra_tags"] = ["gguf"]
        hub.add(f"{author}/model-{i:06d}", created_at=start + step * i, **kw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=int, default=200)
    parser.add_argument("--repos", type=int, default=20_000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    hub = FakeHub()
    populate(hub, args.authors, args.repos)
    hub.start(args.port)
    print(hub.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
