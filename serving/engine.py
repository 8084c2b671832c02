"""The seam between the OpenAI-compatible API and whatever generates tokens.

Two engines sit behind it: the built-in transformers engine (default; the path tested on CPU)
and the vLLM engine (production on GPUs: each loaded version is a supervised vLLM server
process behind the proxy). The API, the batching queue's callers and the hot-swap manager
only ever see these types, so a blue/green swap is the same code for both: ``load`` the new
version (loaded *and* warmed when it returns), switch the pointer, ``close`` the old one once
its in-flight requests have finished.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from uptake.errors import DependencyError, InputError
from uptake.models.remote_code import ModelOrigin
from uptake.models.tool_calls import ToolCall

FinishReason = Literal["stop", "length", "tool_calls"]
ToolChoice = Literal["auto", "required", "function"]


class VersionClosed(DependencyError):
    """A request reached a version after its ``close`` began (the swap manager's pointer had
    moved on): the next request is answered by the current version."""


class QueueFull(DependencyError):
    """The version already holds ``serving.max_queue`` waiting requests: a 429 with
    ``Retry-After``, so one client's flood cannot grow the wait of everyone behind it."""

    retry_after_s = 1


class ToolsUnsupported(InputError):
    """Tools were sent to a model whose chat template does not render them (400)."""


class ChatMessage(BaseModel):
    """One message as the chat template sees it. ``tool_calls`` are an assistant's earlier
    calls (OpenAI's ``{"id", "type", "function": {"name", "arguments"}}``, arguments as JSON
    text), ``tool_call_id`` ties a ``tool`` message to the call it answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message for a chat template (only the fields it has)."""
        return self.model_dump(exclude_none=True)


class GenerationRequest(BaseModel):
    """What the API hands an engine: OpenAI's parameters, already validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI tool definitions to render into the prompt (none: no tools, no call parsing)."""
    tool_choice: ToolChoice = "auto"
    """``auto``: the model may call; ``required``: it must call one; ``function``: it must call
    ``forced_tool``."""
    forced_tool: str | None = None


class Generation(BaseModel):
    """One finished completion with OpenAI's usage counts. ``text`` is the content (the text
    before any call), ``tool_calls`` the calls read from the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    tool_calls: tuple[ToolCall, ...] = ()


class TextDelta(BaseModel):
    """One piece of a streamed completion; the last one carries ``finish_reason``, usage and
    the tool calls. An engine's stream yields a first (empty) delta once the request was
    admitted: its own errors (a prompt over the context, a template that rejects it) raise
    before it, so the API can answer them with a status instead of an error chunk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()


class LoadedVersion(Protocol):
    """One model version, loaded and warmed, able to answer until ``close``."""

    registered_model: str
    version: str

    @property
    def queue_depth(self) -> int:
        """Requests waiting for their turn (``/metrics``: ``uptake_serving_queue_depth``)."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        """The answer piece by piece; raises ``QueueFull`` when the version's queue is full,
        ``InputError`` for a request it cannot take (before the first, admitting delta)."""
        ...

    async def close(self) -> None:
        """Free the version (GPU memory, child process). Called once no request uses it."""
        ...


class Engine(Protocol):
    """Loads versions. ``load`` returns only once the version has answered a warm-up request,
    and raises (with a one-line reason) when it cannot load or warm: the caller keeps the old
    version serving."""

    name: str
    libraries: tuple[str, ...]  # modules a load imports (the CLI imports them first, then freezes)

    async def load(
        self,
        registered_model: str,
        version: str,
        model_dir: Path,
        origin: ModelOrigin | None = None,
    ) -> LoadedVersion:
        """Load and warm ``model_dir``; ``origin`` (the version's source and repo id, from its
        MLflow tags) decides whether an allow-listed model's own code may run."""
        ...

    async def aclose(self) -> None:
        """Stop whatever the engine runs itself (threads, child processes)."""
        ...
