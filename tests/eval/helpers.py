"""Helpers for the evaluation tests: suites on disk and loopback OpenAI-compatible servers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO = Path(__file__).resolve().parents[2]
LEGAL = REPO / "examples" / "legal"


def train_corpus() -> list[str]:
    rows = [json.loads(line) for line in (LEGAL / "train.jsonl").read_text().splitlines()]
    return [m["content"] for row in rows for m in row["messages"]]


def task(
    task_id: str = "t1",
    area: str = "immigration",
    criteria: list[dict[str, Any]] | None = None,
    prompt: str = "What is the deadline?",
    **extra: Any,
) -> dict[str, Any]:
    """One suite line as a dict; criteria default to a single contains check."""
    return {
        "id": task_id,
        "practice_area": area,
        "messages": [{"role": "user", "content": prompt}],
        "criteria": criteria
        or [{"id": "c1", "description": "d", "check": {"type": "contains", "value": "x"}}],
        **extra,
    }


def write_suite(path: Path, lines: list[Any]) -> Path:
    """Write lines (dicts become JSON, strings are written verbatim) as a JSONL suite."""
    text = "".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 (uvicorn in a thread) around a FastAPI app."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def completion(content: str, completion_tokens: int = 0, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "cmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {"completion_tokens": completion_tokens},
    }


class ScriptedJudge:
    """An OpenAI-compatible judge whose replies are scripted per request.

    Each script entry is a string (the reply content), ("sleep", seconds, content),
    ("status", code) or ("raw", json_body) for a reply that is not a chat completion.
    When the script runs out, ``default`` is used. Every request body and its headers are
    recorded.
    """

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.default: Any = '{"pass": true, "reason": "meets the criterion"}'
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.reply: Callable[[dict[str, Any]], Any] | None = None
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            entry = (
                self.reply(body)
                if self.reply
                else (self.script.pop(0) if self.script else self.default)
            )
            if isinstance(entry, tuple) and entry[0] == "sleep":
                await asyncio.sleep(entry[1])
                entry = entry[2]
            if isinstance(entry, tuple) and entry[0] == "status":
                return JSONResponse({"error": "scripted"}, status_code=entry[1])
            if isinstance(entry, tuple) and entry[0] == "raw":
                return JSONResponse(entry[1])
            return JSONResponse(completion(entry))

        self.app = app
