"""The agent loop: instructions in, tool calls until the model stops or a cap ends it.

LAB's protocol: a system prompt and the task's instructions as one user message, then the
model's turns; each tool call is run in the workspace and its result sent back. The loop ends
when the model answers without calling a tool (``done``), at the turn cap (``turn_cap``), at
the task's wall deadline (``deadline``), when the token budget is spent (``token_budget``) or
when the model's endpoint fails (``model_error``) or the conversation no longer fits the
in-process model's context (``context_exceeded``). Whatever it wrote by then is graded.

The transcript is the conversation in OpenAI's message shape (what SFT on passing
transcripts reads as is: ``messages`` + ``tools``) plus a timing per turn and per tool call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from pipeline.eval.agent.models import ChatModel
from pipeline.eval.agent.workspace import Workspace
from uptake.errors import DependencyError

SYSTEM_PROMPT = (
    "You are a careful legal professional working on a task in a workspace. The task's "
    "source documents are under documents/ (read-only); write every deliverable under "
    "output/ with the exact file name the instructions ask for. Use the tools to read the "
    "documents and write the deliverables; .docx deliverables can be written with "
    "write_docx. When the deliverables are complete, answer with a short summary and no "
    "tool call."
)

StopReason = Literal[
    "done", "turn_cap", "deadline", "token_budget", "model_error", "context_exceeded"
]


class AgentLimits(BaseModel):
    max_turns: int = Field(60, ge=1, le=1000)
    deadline_s: float = Field(1800.0, gt=0)
    token_budget: int = Field(2_000_000, ge=1)
    max_tokens_per_turn: int = Field(4096, ge=1)


class ToolEvent(BaseModel):
    turn: int
    id: str
    name: str
    arguments: str
    seconds: float
    error: bool


class TurnEvent(BaseModel):
    turn: int
    model_seconds: float
    tokens_in: int
    tokens_out: int
    n_tool_calls: int


class Transcript(BaseModel):
    """Everything one task's run did, in a form that can feed training later."""

    task_id: str
    model: str
    system: str
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    turns: list[TurnEvent] = Field(default_factory=list)
    tool_events: list[ToolEvent] = Field(default_factory=list)
    stop_reason: StopReason = "done"
    error: str | None = None
    wall_seconds: float = 0.0
    model_seconds: float = 0.0
    tool_seconds: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    documents_present: list[str] = Field(default_factory=list)
    documents_read: list[str] = Field(default_factory=list)
    deliverables: list[str] = Field(default_factory=list)
    bash_offered: bool = False

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1), encoding="utf-8")
        return path


def _assistant_message(content: str | None, calls: list[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


def run_agent(
    model: ChatModel,
    task_id: str,
    instructions: str,
    workspace: Workspace,
    limits: AgentLimits,
    *,
    clock: Any = time.monotonic,
) -> Transcript:
    """Run one task to its end; never raises for what the model does."""
    start = clock()
    deadline = start + limits.deadline_s
    workspace.deadline = deadline
    tools = workspace.schemas()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instructions},
    ]
    t = Transcript(
        task_id=task_id,
        model=model.name,
        system=SYSTEM_PROMPT,
        tools=tools,
        messages=messages,
        documents_present=workspace.documents_present(),
        bash_offered="bash" in workspace.tool_names,
        stop_reason="turn_cap",
    )
    messages = t.messages  # pydantic copied the list: append to the transcript's own
    for turn in range(1, limits.max_turns + 1):
        left = deadline - clock()
        if left <= 0:
            t.stop_reason = "deadline"
            break
        budget = limits.token_budget - t.tokens_in - t.tokens_out
        if budget <= 0:
            t.stop_reason = "token_budget"
            break
        began = clock()
        try:
            reply = model.turn(messages, tools, min(limits.max_tokens_per_turn, budget), left)
        except DependencyError as exc:
            t.stop_reason, t.error = "model_error", str(exc)
            break
        spent = clock() - began
        t.model_seconds += spent
        t.tokens_in += reply.tokens_in
        t.tokens_out += reply.tokens_out
        t.turns.append(
            TurnEvent(
                turn=turn,
                model_seconds=spent,
                tokens_in=reply.tokens_in,
                tokens_out=reply.tokens_out,
                n_tool_calls=len(reply.tool_calls),
            )
        )
        messages.append(_assistant_message(reply.content, reply.tool_calls))
        if reply.finish_reason == "context_exceeded":  # the conversation outgrew the model
            t.stop_reason = "context_exceeded"
            break
        if not reply.tool_calls:
            t.stop_reason = "done"
            break
        for call in reply.tool_calls:
            began = clock()
            result = workspace.call(call.name, call.arguments)
            took = clock() - began
            t.tool_seconds += took
            t.tool_events.append(
                ToolEvent(
                    turn=turn,
                    id=call.id,
                    name=call.name,
                    arguments=call.arguments,
                    seconds=took,
                    error=result.startswith("error: "),
                )
            )
            messages.append(
                {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}
            )
        if clock() >= deadline:
            t.stop_reason = "deadline"
            break
    t.wall_seconds = clock() - start
    t.documents_read = sorted(workspace.read_documents)
    t.deliverables = workspace.deliverables()
    return t
