"""Ask serving a question, as any OpenAI client would, and keep the version that answered."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

VERSION_HEADER = "x-uptake-model-version"


class Answer(BaseModel):
    question: str
    text: str
    header: str | None  # the x-uptake-model-version header: "<registered model>/<version>"
    version: str | None  # the version part of it
    status_code: int


def sample_question(suite: Path) -> str:
    """The first task's prompt of the suite: a held-out legal question."""
    with suite.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line) if line.strip() else {}
            if "messages" in row:
                return str(row["messages"][-1]["content"])
    raise ValueError(f"{suite} holds no task")


def api_root(address: str) -> str:
    """Serving's address without the OpenAI ``/v1`` suffix its probe reports."""
    address = address.rstrip("/")
    return address[: -len("/v1")] if address.endswith("/v1") else address


def ask(base_url: str, model: str, question: str, max_tokens: int = 120) -> Answer:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    r = httpx.post(f"{base_url.rstrip('/')}/v1/chat/completions", json=body, timeout=60)
    text = ""
    if r.status_code == 200:
        try:
            text = r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            text = r.text[:500]
    else:
        text = r.text[:500]
    header = r.headers.get(VERSION_HEADER)
    return Answer(
        question=question,
        text=text,
        header=header,
        version=header.rsplit("/", 1)[-1] if header else None,
        status_code=r.status_code,
    )


def wait_for_version(
    base_url: str, model: str, version: str, timeout_s: float, stop: threading.Event | None = None
) -> Answer | None:
    """Ask (one token) until ``version`` answers; None if it did not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return None
        try:
            answer = ask(base_url, model, "ping", max_tokens=1)
            if answer.status_code == 200 and answer.version == version:
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    return None
