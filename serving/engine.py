"""The seam between the OpenAI-compatible API and whatever generates tokens.

Two engines sit behind it: the built-in transformers engine (default; the path tested on CPU)
and the vLLM engine (production on GPUs: each loaded version is a supervised vLLM server
process behind the proxy). The API, the batching queue's callers and the hot-swap manager
only ever see these types, so a blue/green swap is the same code for both: ``load`` the new
version (loaded *and* warmed when it returns), switch the pointer, ``close`` the old one once
its in-flight requests have finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from uptake.errors import DependencyError


class VersionClosed(DependencyError):
    """A request reached a version after its ``close`` began (the swap manager's pointer had
    moved on): the next request is answered by the current version."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class GenerationRequest(BaseModel):
    """What the API hands an engine: OpenAI's parameters, already validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None


class Generation(BaseModel):
    """One finished completion with OpenAI's usage counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class TextDelta(BaseModel):
    """One piece of a streamed completion; the last one carries ``finish_reason`` and usage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = ""
    finish_reason: Literal["stop", "length"] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LoadedVersion(Protocol):
    """One model version, loaded and warmed, able to answer until ``close``."""

    registered_model: str
    version: str

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]: ...

    async def close(self) -> None:
        """Free the version (GPU memory, child process). Called once no request uses it."""
        ...


class Engine(Protocol):
    """Loads versions. ``load`` returns only once the version has answered a warm-up request,
    and raises (with a one-line reason) when it cannot load or warm: the caller keeps the old
    version serving."""

    name: str
    libraries: tuple[str, ...]  # modules a load imports (the CLI imports them first, then freezes)

    async def load(self, registered_model: str, version: str, model_dir: Path) -> LoadedVersion: ...

    async def aclose(self) -> None:
        """Stop whatever the engine runs itself (threads, child processes)."""
        ...
