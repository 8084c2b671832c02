"""``POST /v1/chat/completions`` on the wire: the request as OpenAI clients send it, the answer
and the stream chunks they expect, all pydantic models.

A request is validated here once, into the engine seam's ``GenerationRequest``: every number
is checked with the field it came from named (``temperature`` of ``1e-300`` would make every
probability NaN, a ``seed`` of ``2**70`` overflows the generator), stop texts are capped as
OpenAI caps them (at most 4) and in length, and what the seam cannot honour (``n`` > 1,
logprobs, ``response_format``) is refused rather than ignored; fields uptake has no use for
(``user``, penalties, ``parallel_tool_calls``) are accepted and ignored, as OpenAI servers do.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from serving.api.protocol import ApiError, bad_request
from serving.engine import ChatMessage, FinishReason, Generation, GenerationRequest, ToolChoice
from uptake.errors import printable_field
from uptake.models.tool_calls import ToolCall

MAX_STOPS = 4  # OpenAI's own limit
MAX_STOP_CHARS = 256  # a stop text longer than this is no sentence end; it only costs time
MIN_TEMPERATURE = 1e-3  # below it logits / temperature overflow: use 0 for greedy
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # OpenAI's int64; what a torch.Generator takes
MAX_TOOLS = 128  # OpenAI's own limit
UNSUPPORTED = (
    "functions",
    "function_call",
    "response_format",
    "logprobs",
    "top_logprobs",
    "best_of",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]


def _text(content: Content | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(p.text for p in content)


class FunctionCallIn(_Lenient):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = None
    name: str | None = None


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


def seam_message(
    message: SystemMessage | UserMessage | AssistantMessage | ToolMessage,
) -> ChatMessage:
    """The message as the engine seam (and the chat template) takes it."""
    if isinstance(message, ToolMessage):
        return ChatMessage(
            role="tool", content=_text(message.content), tool_call_id=message.tool_call_id
        )
    if isinstance(message, AssistantMessage):
        calls = (
            tuple(c.model_dump(mode="json") for c in message.tool_calls)
            if message.tool_calls
            else None
        )
        return ChatMessage(role="assistant", content=_text(message.content), tool_calls=calls)
    role = "system" if message.role == "developer" else message.role
    return ChatMessage(role=role, content=_text(message.content))


class FunctionDefinition(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDefinition] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, not {value:g}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        for stop in stops:
            if len(stop) > MAX_STOP_CHARS:
                raise ValueError(
                    f"a stop sequence may have at most {MAX_STOP_CHARS} characters, "
                    f"not {len(stop):,}"
                )
        return [s for s in stops if s]

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(
        cls, choice: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        tools = info.data.get("tools") or []
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in [t.function.name for t in tools]:
                raise ValueError(f"names {choice.function.name!r}, which is not among the tools")
        elif choice == "required" and not tools:
            raise ValueError("'required' needs tools")
        return choice

    def generation(self, default_max_tokens: int, max_tokens_limit: int) -> GenerationRequest:
        """The seam's request; raises ``ApiError`` for what it cannot honour."""
        if self.n not in (None, 1):
            raise bad_request("only n=1 is supported", "unsupported_parameter", "n")
        extra = sorted(k for k in (self.model_extra or {}) if k in UNSUPPORTED)
        if extra:
            raise bad_request(
                f"unsupported parameter: {extra[0]}", "unsupported_parameter", extra[0]
            )
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise bad_request(
                f"max_tokens is {max_tokens}; this server allows at most {max_tokens_limit}",
                param="max_tokens",
            )
        tools, choice, forced = self._tools()
        return GenerationRequest(
            messages=tuple(seam_message(m) for m in self.messages),
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=tuple(self.stop or ()),
            seed=self.seed,
            tools=tools,
            tool_choice=choice,
            forced_tool=forced,
        )

    def _tools(self) -> tuple[tuple[dict[str, Any], ...], ToolChoice, str | None]:
        """Tools to render, the choice, the function a call must name. ``none`` renders no
        tools: the model answers in text and nothing is read as a call."""
        if not self.tools or self.tool_choice == "none":
            return (), "auto", None
        tools = tuple(t.model_dump(mode="json", exclude_none=True) for t in self.tools)
        if isinstance(self.tool_choice, NamedToolChoice):
            return tools, "function", self.tool_choice.function.name
        return tools, "required" if self.tool_choice == "required" else "auto", None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request in ``body``; ``ApiError`` (400) for bad JSON or bad fields, on one line,
    naming the field."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request("invalid JSON: nested too deeply", "invalid_json") from None
    except ValueError as exc:
        raise bad_request(f"invalid JSON: {exc}", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(printable_field(p) for p in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(
            400, f"{where}: {message}", "invalid_request_error", "invalid_parameter", param=where
        ) from None


# -- answers ------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut

    @classmethod
    def of(cls, call: ToolCall) -> ToolCallOut:
        return cls(id=call.id, function=FunctionCallOut(name=call.name, arguments=call.arguments))


class AssistantOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantOut
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str
    choices: list[Choice]
    usage: Usage

    @classmethod
    def of(cls, cid: str, model: str, fingerprint: str, gen: Generation) -> ChatCompletionResponse:
        calls = [ToolCallOut.of(c) for c in gen.tool_calls] or None
        message = AssistantOut(content=gen.text or (None if calls else ""), tool_calls=calls)
        return cls(
            id=cid,
            model=model,
            system_fingerprint=fingerprint,
            choices=[Choice(message=message, finish_reason=gen.finish_reason)],
            usage=Usage.of(gen.prompt_tokens, gen.completion_tokens),
        )


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None

    @classmethod
    def make(
        cls,
        cid: str,
        model: str,
        fingerprint: str,
        *,
        delta: DeltaMessage | None = None,
        finish_reason: FinishReason | None = None,
        usage: Usage | None = None,
    ) -> ChatCompletionChunk:
        """A chunk with one choice (``delta`` and ``finish_reason``), or the usage chunk
        (``usage``, no choices). Every field it sends is set here: ``sse`` leaves out the
        rest (a delta's fields the chunk does not carry, the usage of other chunks)."""
        if usage is not None:
            choices = []
        else:
            choice = ChunkChoice(
                index=0, delta=delta or DeltaMessage(), finish_reason=finish_reason, logprobs=None
            )
            choices = [choice]
        fields: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": choices,
        }
        if usage is not None:
            fields["usage"] = usage
        return cls(**fields)

    def sse(self) -> str:
        """The chunk as one server-sent event; fields that were not set are left out."""
        return f"data: {self.model_dump_json(exclude_unset=True)}\n\n"


def tool_call_deltas(calls: tuple[ToolCall, ...]) -> list[DeltaToolCall]:
    """Whole calls as stream pieces: one per call, with its id, name and all its arguments."""
    return [
        DeltaToolCall(
            index=i,
            id=c.id,
            type="function",
            function=DeltaFunctionCall(name=c.name, arguments=c.arguments),
        )
        for i, c in enumerate(calls)
    ]


DONE = "data: [DONE]\n\n"
