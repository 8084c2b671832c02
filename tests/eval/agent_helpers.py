"""Doubles for the agent tests: a scripted OpenAI-compatible agent model and LAB task folders.

Real tiny models cannot call tools, so the loop is driven by a loopback endpoint that plays a
fixed sequence of tool calls (real HTTP, the real ``openai`` client on the other side).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.eval.helpers import REPO

EXAMPLE = REPO / "examples" / "legal-agentic"
Step = dict[str, Any]  # {"calls": [(name, args), ...]} or {"content": "..."}


def call(name: str, **args: Any) -> tuple[str, dict[str, Any]]:
    return name, args


def turn_reply(step: Step, index: int) -> dict[str, Any]:
    calls = [
        {
            "id": f"call_{index}_{i}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for i, (name, args) in enumerate(step.get("calls", []))
    ]
    message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"cmpl-{index}",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted-agent",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


class ScriptedAgent:
    """Plays ``script(task_instructions)`` turn by turn; the turn is the number of assistant
    messages already in the conversation. Past the script's end it stops (no tool call)."""

    def __init__(self, script: Callable[[str], list[Step]], *, sleep_s: float = 0.0) -> None:
        self.script = script
        self.sleep_s = sleep_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> JSONResponse:
            return JSONResponse(
                {"object": "list", "data": [{"id": "scripted-agent", "object": "model"}]}
            )

        @app.post("/v1/chat/completions")
        def chat(body: dict[str, Any]) -> JSONResponse:  # sync: sleeps in a worker thread
            with self._lock:
                self.requests.append(body)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                messages = body["messages"]
                instructions = next(m["content"] for m in messages if m["role"] == "user")
                turn = sum(m["role"] == "assistant" for m in messages)
                steps = self.script(instructions)
                if self.sleep_s:
                    time.sleep(self.sleep_s)
                step = steps[turn] if turn < len(steps) else {"content": "Done."}
                return JSONResponse(turn_reply(step, turn))
            finally:
                with self._lock:
                    self.in_flight -= 1

        self.app = app


def copy_example(tmp: Path, *task_ids: str) -> Path:
    """A writable copy of the example suite (only ``task_ids`` when given)."""
    target = tmp / "suite"
    if not task_ids:
        shutil.copytree(EXAMPLE / "tasks", target / "tasks")
    for task_id in task_ids:
        shutil.copytree(EXAMPLE / "tasks" / task_id, target / "tasks" / task_id)
    return target


def lab_verdict(passed: bool, reasoning: str = "checked") -> str:
    return json.dumps({"verdict": "pass" if passed else "fail", "reasoning": reasoning})


def lab_task(
    root: Path, task_id: str, spec: dict[str, Any], docs: dict[str, bytes] | None = None
) -> Path:
    folder = root / "tasks" / task_id
    (folder / "documents").mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps(spec), encoding="utf-8")
    for name, data in (docs or {}).items():
        (folder / "documents" / name).write_bytes(data)
    return folder


def lab_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "title": "Summarise",
        "instructions": "Summarise the note.\n\nOutput: `summary.md`",
        "deliverables": {"summary": "summary.md"},
        "work_type": "analyze",
        "tags": [],
        "criteria": [
            {
                "id": "C-001",
                "title": "Mentions the deadline",
                "match_criteria": "PASS if the summary gives 1 May. FAIL otherwise.",
                "deliverables": ["summary"],
            }
        ],
    }
    spec.update(over)
    return spec
