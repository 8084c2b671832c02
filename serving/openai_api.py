"""OpenAI's chat completions wire format: the request as clients send it, the answers and
the error body (``{"error": {"message", "type", "code"}}``) they expect.

A request is validated here once, into the engine seam's ``GenerationRequest``; everything
the seam cannot honour (``n`` > 1, tools, logprobs) is refused with a 400 rather than ignored,
and fields uptake has no use for (``user``, penalties) are accepted and ignored, as OpenAI
servers do.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.engine import ChatMessage, Generation, GenerationRequest
from uptake.errors import UptakeError, printable_field

MAX_STOPS = 4  # OpenAI's own limit
UNSUPPORTED = (
    "tools",
    "tool_choice",
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


class ApiError(UptakeError):
    """An OpenAI-style error answer; its ``status`` says whose fault it is."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def bad_request(message: str, code: str | None = None, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code or "invalid_request")


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_Part]

    def seam(self) -> ChatMessage:
        text = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return [s for s in stops if s]

    def generation(self, default_max_tokens: int, max_tokens_limit: int) -> GenerationRequest:
        """The seam's request; raises ``ApiError`` for what it cannot honour."""
        if self.n not in (None, 1):
            raise bad_request("only n=1 is supported", "unsupported_parameter")
        extra = sorted(k for k in (self.model_extra or {}) if k in UNSUPPORTED)
        if extra:
            raise bad_request(f"unsupported parameter: {extra[0]}", "unsupported_parameter")
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise bad_request(
                f"max_tokens is {max_tokens}; this server allows at most {max_tokens_limit}"
            )
        return GenerationRequest(
            messages=tuple(m.seam() for m in self.messages),
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            stop=tuple(self.stop or ()),
            seed=self.seed,
        )


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The request in ``body``; ``ApiError`` (400) for bad JSON or bad fields, on one line."""
    try:
        data = json.loads(body)
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
        raise bad_request(f"{where}: {first['msg']}", "invalid_parameter") from None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(cid: str, model: str, fingerprint: str, gen: Generation) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(gen.prompt_tokens, gen.completion_tokens),
    }


def chunk(
    cid: str,
    model: str,
    fingerprint: str,
    *,
    delta: dict[str, str] | None = None,
    finish_reason: str | None = None,
    usage: tuple[int, int] | None = None,
) -> str:
    """One server-sent event of a streamed completion (``usage`` alone: the usage chunk)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = _usage(*usage)
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
