"""The agent's model: one chat turn with tools, from an endpoint or an in-process model.

- ``OpenAIChatModel``: any OpenAI-compatible ``/v1/chat/completions`` with ``tools`` (the
  served champion, vLLM, a closed API), through the ``openai`` client.
- ``LocalChatModel``: a transformers model directory in process; its chat template is
  rendered with ``tools=`` and its calls are read by ``uptake.models.tool_calls`` (the parser
  serving uses). Greedy; one turn at a time (a lock), so concurrent tasks share it safely.

A model that never calls a tool simply ends the loop after its first answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from uptake.errors import DependencyError
from uptake.models.tool_calls import ToolCall, parse_tool_calls


class ModelTurn(BaseModel):
    """One answer: its text, its tool calls (OpenAI's shape) and the tokens it cost."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = "stop"


class ChatModel(Protocol):
    name: str

    def turn(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int,
        timeout_s: float,
    ) -> ModelTurn: ...

    def close(self) -> None: ...


def _count(value: object) -> int:
    return (
        int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
        else 0
    )


class OpenAIChatModel:
    """An OpenAI-compatible endpoint (``http://host:8000`` or ``.../v1``)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_retries: int = 2,
    ) -> None:
        import openai

        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=url, api_key=api_key or "none", max_retries=max_retries
        )
        self.base_url = url
        if model is None:
            try:
                model = next(iter(self._client.models.list())).id
            except (openai.OpenAIError, StopIteration) as exc:
                raise DependencyError(f"{url}/models did not name a model: {exc}") from None
        self.name = model

    def turn(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int,
        timeout_s: float,
    ) -> ModelTurn:
        try:
            resp = self._client.chat.completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]  # plain dicts in OpenAI's shape
                tools=tools or self._openai.omit,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=max_tokens,
                timeout=max(1.0, timeout_s),
            )
        except self._openai.OpenAIError as exc:
            raise DependencyError(
                f"model endpoint {self.base_url} failed: {str(exc)[:300]}"
            ) from None
        if not resp.choices:
            raise DependencyError(f"{self.base_url} answered without a choice")
        choice = resp.choices[0]
        from openai.types.chat import ChatCompletionMessageFunctionToolCall as FunctionCall

        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments or "{}")
            for c in choice.message.tool_calls or []
            if isinstance(c, FunctionCall) and c.function.name  # "custom" tools are not ours
        ]
        usage = resp.usage
        return ModelTurn(
            content=choice.message.content,
            tool_calls=calls,
            tokens_in=_count(usage.prompt_tokens) if usage else 0,
            tokens_out=_count(usage.completion_tokens) if usage else 0,
            finish_reason=str(choice.finish_reason or "stop"),
        )

    def close(self) -> None:
        self._client.close()


class LocalChatModel:
    """A local model directory, loaded once (the evaluation backend's loader and rules)."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        seed: int = 0,
        threads: int | None = None,
        allowlist: Iterable[str] = (),
        repo_id: str | None = None,
    ) -> None:
        from pipeline.eval.generate import TransformersBackend

        self._backend = TransformersBackend(
            model_dir,
            device=device,
            seed=seed,
            threads=threads,
            allowlist=allowlist,
            repo_id=repo_id,
        )
        self.prep = self._backend.prep
        self.name = str(model_dir)
        self._lock = threading.Lock()

    def turn(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int,
        timeout_s: float,
    ) -> ModelTurn:
        rendered = self.prep.render([messages], [tools or None])[0]
        if rendered.text is None:
            raise DependencyError(f"the chat template of {self.name} fails: {rendered.error}")
        ids = self.prep.encode(rendered.text)
        room = self.prep.room(max_tokens, len(ids))
        if room == 0:
            return ModelTurn(content="", tokens_in=len(ids), finish_reason="context_exceeded")
        with self._lock, self.prep.torch_threads():
            out_ids = self._generate(ids, room)
        text = self.prep.decode(out_ids, keep_tool_markers=True).strip()
        parsed = parse_tool_calls(text, self.prep.tool_format)
        return ModelTurn(
            content=parsed.content,
            tool_calls=list(parsed.tool_calls),
            tokens_in=len(ids),
            tokens_out=len(out_ids),
            finish_reason="length" if len(out_ids) >= room else "stop",
        )

    def _generate(self, ids: list[int], max_new_tokens: int) -> list[int]:
        import torch

        model = self._backend.model
        torch.manual_seed(self._backend.seed)
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids], device=self._backend.device),
                attention_mask=torch.ones(
                    (1, len(ids)), dtype=torch.long, device=self._backend.device
                ),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                eos_token_id=self.prep.eos_ids,
                pad_token_id=self.prep.pad_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        row: list[int] = out[0, len(ids) :].tolist()
        eos = set(self.prep.eos_ids)
        stop = next((i for i, tok in enumerate(row) if tok in eos), None)
        return row if stop is None else row[:stop]

    def close(self) -> None:
        self._backend.close()
