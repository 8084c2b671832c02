"""A counting HTTP proxy in front of MLflow: how many requests a job makes, by endpoint.

The pipeline benchmark points the worker at it (its own reads go to MLflow directly), and
reads the counts before and after each release. Requests are relayed whole (bodies read by
``Content-Length``), which suits tiny models; it is a measuring tool, not a production proxy.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self.host, self.port_up = up.hostname or "127.0.0.1", up.port or 80
        self.counts: Counter[str] = Counter()
        self.sequence: list[str] = []  # every request in order: where a job's requests go
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = urlsplit(self.path).path
                with proxy.lock:
                    proxy.counts[f"{self.command} {path}"] += 1
                    proxy.sequence.append(f"{self.command} {path}")
                conn = http.client.HTTPConnection(proxy.host, proxy.port_up, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


def summarize(counts: Counter[str], sequence: list[str] | None = None) -> dict[str, object]:
    """REST requests (bookkeeping, metrics and registry) apart from artifact transfers;
    ``sequence``: the REST requests in the order they came."""
    rest = {k: v for k, v in counts.items() if "/mlflow-artifacts/" not in k}
    order = [r.rsplit("/mlflow/", 1)[-1] for r in sequence or [] if "/mlflow-artifacts/" not in r]
    return {
        "rest_requests": sum(rest.values()),
        "get_run": sum(v for k, v in rest.items() if k.endswith("/runs/get")),
        "artifact_requests": sum(counts.values()) - sum(rest.values()),
        "by_endpoint": dict(sorted(rest.items(), key=lambda kv: -kv[1])),
        **({"sequence": order} if sequence is not None else {}),
    }
