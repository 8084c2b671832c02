"""vLLM's OpenAI-compatible wire format, both ways: requests out, answers and SSE chunks in.

Shapes read from vLLM's ``entrypoints/openai`` code: a non-streaming answer carries
``choices[0].message.content``, ``finish_reason`` and ``usage``; a stream sends
``chat.completion.chunk`` objects whose ``choices[0].delta.content`` holds new text, one with
``finish_reason``, then (with ``stream_options.include_usage``) a chunk with ``choices: []``
and the whole request's ``usage``, then ``data: [DONE]``. An error is
``{"error": {"message", "type", "code"}}`` (older releases: ``{"object": "error",
"message", ...}``), also inside a stream.

Tool calls (vLLM started with ``--enable-auto-tool-choice --tool-call-parser …``): the
request carries ``tools`` and ``tool_choice``; an answer carries ``message.tool_calls`` and
``finish_reason: "tool_calls"``, a stream sends ``delta.tool_calls`` pieces by ``index`` (the
first with the call's id and name, then pieces of its arguments), gathered here into whole
calls on the final delta.

Everything read back is checked with pydantic: a server that answers something else gets a
one-line ``UpstreamError``, never a KeyError deep in the proxy.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from serving.engine import FinishReason, Generation, GenerationRequest, TextDelta
from uptake.errors import DependencyError, InputError
from uptake.models.tool_calls import ToolCall


class UpstreamError(DependencyError):
    """The vLLM server failed a request or answered something that is not its API."""


class UpstreamInputError(InputError):
    """vLLM refused the request itself (HTTP 400: prompt longer than the context, say)."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Function(_Lenient):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(_Lenient):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Message(_Lenient):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Lenient):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None


class _Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(_Lenient):
    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None


def request_body(
    served_name: str, request: GenerationRequest, *, stream: bool, extra_stop: tuple[str, ...]
) -> dict[str, Any]:
    """The chat completion request for ``served_name`` (the version's own server)."""
    body: dict[str, Any] = {
        "model": served_name,
        "messages": [m.model_dump() for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": 1,
        "stream": stream,
    }
    stop = list(dict.fromkeys((*request.stop, *extra_stop)))
    if stop:
        body["stop"] = stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.tools:
        body["tools"] = list(request.tools)
        body["tool_choice"] = (
            {"type": "function", "function": {"name": request.forced_tool}}
            if request.tool_choice == "function"
            else request.tool_choice
        )
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _finish(reason: str | None) -> FinishReason:
    """vLLM also says ``abort`` (the engine dropped the request): that is a failure."""
    if reason in ("length", "tool_calls"):
        return "length" if reason == "length" else "tool_calls"
    if reason == "abort":
        raise UpstreamError("vLLM aborted the request")
    return "stop"


def error_message(status: int, text: str) -> str:
    """The message of an OpenAI- or older vLLM-style error body, else the status and text."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
    snippet = " ".join(text.split())[:200]
    return f"HTTP {status}" + (f": {snippet}" if snippet else "")


def raise_for_status(status: int, text: str) -> None:
    if status == 400:
        raise UpstreamInputError(error_message(status, text))
    if status >= 400:
        raise UpstreamError(f"vLLM answered {error_message(status, text)}")


def parse_completion(data: Any) -> Generation:
    try:
        completion = _Completion.model_validate(data)
    except ValidationError as exc:
        raise UpstreamError(f"not a chat completion: {exc.errors()[0]['msg']}") from None
    choice = completion.choices[0] if completion.choices else None
    if choice is None or choice.message is None:
        raise UpstreamError("chat completion without a message")
    usage = completion.usage or _Usage()
    calls = _whole_calls(choice.message.tool_calls or [])
    return Generation(
        text=choice.message.content or "",
        finish_reason="tool_calls" if calls else _finish(choice.finish_reason),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tool_calls=calls,
    )


def _whole_calls(pieces: list[_ToolCall]) -> tuple[ToolCall, ...]:
    """Calls from ``tool_calls`` entries; entries with one ``index`` are pieces of one call."""
    names: dict[int, str] = {}
    ids: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    for piece in pieces:
        arguments.setdefault(piece.index, [])
        if piece.id:
            ids[piece.index] = piece.id
        if piece.function is not None:
            if piece.function.name:
                names[piece.index] = piece.function.name
            if piece.function.arguments:
                arguments[piece.index].append(piece.function.arguments)
    calls = []
    for index in sorted(arguments):
        if index not in names:
            raise UpstreamError(f"vLLM sent tool call #{index} without a function name")
        extra = {"id": ids[index]} if index in ids else {}
        calls.append(
            ToolCall(name=names[index], arguments="".join(arguments[index]) or "{}", **extra)
        )
    return tuple(calls)


class StreamState:
    """Turns ``data:`` payloads into TextDeltas; the final delta carries finish and usage."""

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: _Usage | None = None
        self.done = False
        self._call_pieces: list[_ToolCall] = []

    def feed(self, payload: str) -> TextDelta | None:
        """One SSE ``data:`` payload; a delta with new text, or None."""
        if payload.strip() == "[DONE]":
            self.done = True
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            raise UpstreamError(f"stream chunk is not JSON: {payload[:100]!r}") from None
        if isinstance(data, dict) and ("error" in data or data.get("object") == "error"):
            raise UpstreamError(f"vLLM failed mid-stream: {error_message(200, payload)}")
        try:
            chunk = _Completion.model_validate(data)
        except ValidationError as exc:
            raise UpstreamError(f"not a completion chunk: {exc.errors()[0]['msg']}") from None
        if chunk.usage is not None and not chunk.choices:
            self.usage = chunk.usage
            return None
        text = ""
        for choice in chunk.choices[:1]:
            if choice.delta is not None and choice.delta.content:
                text = choice.delta.content
            if choice.delta is not None and choice.delta.tool_calls:
                self._call_pieces.extend(choice.delta.tool_calls)
            if choice.finish_reason is not None:
                self.finish_reason = _finish(choice.finish_reason)
        return TextDelta(text=text) if text else None

    def final(self) -> TextDelta:
        if not self.done:
            raise UpstreamError("vLLM stream ended before data: [DONE]")
        if self.finish_reason is None:
            raise UpstreamError("vLLM stream ended without a finish_reason")
        usage = self.usage or _Usage()
        calls = _whole_calls(self._call_pieces)
        return TextDelta(
            finish_reason="tool_calls" if calls else self.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            tool_calls=calls,
        )
