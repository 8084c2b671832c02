"""Generation backends: a local transformers model directory, or an OpenAI-compatible endpoint.

Both turn chat messages into one greedy completion per task, so any model — a freshly
post-trained checkpoint, its base model, the champion behind serving, a closed API — is
scored by the same graders on the same prompts.

The transformers backend loads through ``uptake.models`` like training and serving:
safetensors only, a model's own code only when its source is allow-listed (the same decision
training makes), bf16 on CUDA. It decodes greedily in batches with left padding (prompts sorted
by length, so little padding). The prompt, padding and stop rules are serving's too
(``uptake.models.generation``): a tokenizer without a chat template gets ChatML
(``uptake/models/templates/chatml.jinja``), which is what docs/evaluation.md documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel

from uptake.errors import DependencyError, InputError
from uptake.http_limits import ResponseTooLarge, limited_client
from uptake.models import load_model_and_tokenizer
from uptake.models.generation import GenerationPrep

MAX_RESPONSE_BYTES = 8 << 20  # an endpoint's answer larger than this is a failure, not memory

Progress = Callable[[int], None]  # called with the number of requests just finished


class GenRequest(BaseModel):
    messages: list[dict[str, str]]
    max_new_tokens: int


class Generation(BaseModel):
    """One completion. ``generation_truncated``: the prompt left fewer positions than the task's
    ``max_new_tokens``, so it got only what remained; ``context_exceeded``: the prompt alone
    fills the model's context, nothing was generated and the task fails."""

    text: str
    n_tokens: int
    finish_reason: Literal["stop", "length"]
    generation_truncated: bool = False
    context_exceeded: bool = False
    prompt_tokens: int | None = None


class Backend(Protocol):
    name: str
    model_name: str

    def generate(
        self, requests: Sequence[GenRequest], batch_size: int, progress: Progress | None = None
    ) -> list[Generation]: ...


def _cut_at_stop_text(text: str) -> str:
    """A fallback-template model may spell the turn end as text: cut there."""
    for stop in GenerationPrep.stop_texts:
        index = text.find(stop)
        if index >= 0:
            text = text[:index]
    return text.strip()


class TransformersBackend:
    """A local model directory, loaded once; ``generate`` can be called many times.

    ``allowlist`` (settings' ``trust_remote_code_allowlist``) and ``repo_id`` (the hub repo the
    model came from) decide whether a model that needs its own code may run it, as in training.
    Padding, end-of-turn ids, the chat template and its rendering, and the CPU-thread rule are
    ``prep``'s (``uptake.models.generation``, shared with serving).
    """

    name = "transformers"

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
        path = Path(model_dir)
        loaded = load_model_and_tokenizer(path, allowlist=allowlist, repo_id=repo_id, device=device)
        self.model_name = str(path)
        self.seed = seed
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.trust_remote_code = loaded.remote_code.trust_remote_code
        self.prep = GenerationPrep.of(loaded, name=str(path), threads=threads)
        self.tokenizer = self.prep.tokenizer
        self.model = loaded.model

    def render_all(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Prompt texts, as generation renders them (a model's own template: one bounded
        render for all of them, in its warm child)."""
        return self.prep.prompts([list(m) for m in conversations])

    def close(self) -> None:
        """End the template's render child (the weights go with the backend)."""
        self.prep.close()

    def generate(
        self, requests: Sequence[GenRequest], batch_size: int = 16, progress: Progress | None = None
    ) -> list[Generation]:
        """Greedy completions in the order of ``requests``, on the prep's torch thread count
        for the call (restored after)."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        with self.prep.torch_threads():
            return self._generate(requests, batch_size, progress)

    def _generate(
        self, requests: Sequence[GenRequest], batch_size: int, progress: Progress | None
    ) -> list[Generation]:
        encoded = [self.prep.encode(p) for p in self.render_all([r.messages for r in requests])]
        limits = [
            self.prep.room(r.max_new_tokens, len(ids))
            for r, ids in zip(requests, encoded, strict=True)
        ]
        results: list[Generation | None] = [None] * len(requests)
        for i, limit in enumerate(limits):
            if limit == 0:  # the prompt alone fills the context: this task fails, not the run
                results[i] = Generation(
                    text="",
                    n_tokens=0,
                    finish_reason="length",
                    context_exceeded=True,
                    prompt_tokens=len(encoded[i]),
                )
        if progress is not None and limits.count(0):
            progress(limits.count(0))
        # Same max_new_tokens per batch, similar lengths together: less padding, same results.
        order = sorted(
            (i for i in range(len(requests)) if limits[i] > 0),
            key=lambda i: (limits[i], len(encoded[i])),
        )
        start = 0
        while start < len(order):
            limit = limits[order[start]]
            batch = [order[start]]
            while (
                len(batch) < batch_size
                and start + len(batch) < len(order)
                and limits[order[start + len(batch)]] == limit
            ):
                batch.append(order[start + len(batch)])
            for index, gen in zip(
                batch, self._generate_batch([encoded[i] for i in batch], limit), strict=True
            ):
                gen.prompt_tokens = len(encoded[index])
                gen.generation_truncated = limit < requests[index].max_new_tokens
                results[index] = gen
            start += len(batch)
            if progress is not None:
                progress(len(batch))
        return [r for r in results if r is not None]

    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int) -> list[Generation]:
        import torch

        ids, mask = self.prep.left_pad(batch)
        width = len(ids[0])
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,  # trained checkpoints often say use_cache=false
                eos_token_id=self.prep.eos_ids,
                pad_token_id=self.prep.pad_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        generations = []
        eos = set(self.prep.eos_ids)
        for row in out[:, width:].tolist():
            stop = next((i for i, tok in enumerate(row) if tok in eos), None)
            kept = row if stop is None else row[:stop]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            generations.append(
                Generation(
                    text=_cut_at_stop_text(text),
                    n_tokens=len(kept) + (0 if stop is None else 1),
                    finish_reason="length" if stop is None else "stop",
                )
            )
        return generations


def _count(value: object) -> int:
    """A token count from an endpoint's ``usage``: 0 when absent or not a sane integer."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if 0 <= value < 2**31 else 0


def _api_base(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean the ``/v1`` API."""
    url = url.rstrip("/")
    return url if urlparse(url).path not in ("", "/") else url + "/v1"


class OpenAIBackend:
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint (serving, vLLM, a closed API).

    ``batch_size`` requests are in flight at once; temperature 0 and a fixed seed ask the
    server for deterministic output (whether it honours that is up to the server). Each call
    ends within ``timeout_s`` as a whole (a server that drips its answer cannot hold the
    evaluation; a timeout is retried) and reads at most ``MAX_RESPONSE_BYTES`` (an oversize
    answer fails at once, without a retry).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.base_url = _api_base(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = limited_client(
            deadline_s=timeout_s, max_bytes=MAX_RESPONSE_BYTES, headers=headers, timeout=timeout_s
        )
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.seed = seed
        self.model_name = model or self._first_model()

    def _first_model(self) -> str:
        try:
            resp = self._client.get(f"{self.base_url}/models")
            resp.raise_for_status()
            return str(resp.json()["data"][0]["id"])
        except ResponseTooLarge as exc:
            raise DependencyError(f"model endpoint {self.base_url}: {exc}") from None
        except httpx.TransportError as exc:
            raise DependencyError(f"cannot reach model endpoint {self.base_url}: {exc}") from None
        except (httpx.HTTPStatusError, ValueError, KeyError, IndexError, TypeError):
            raise InputError(
                f"{self.base_url}/models did not name a model; pass the model name (--api-model)"
            ) from None

    def _one(self, request: GenRequest) -> Generation:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": request.messages,
            "max_tokens": request.max_new_tokens,
            "temperature": 0,
            "seed": self.seed,
        }
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._client.post(f"{self.base_url}/chat/completions", json=body)
            except ResponseTooLarge as exc:  # the same request would get the same answer
                raise DependencyError(f"model endpoint {self.base_url} failed: {exc}") from None
            except httpx.TransportError as exc:
                last = f"cannot reach {self.base_url}: {exc}"
            else:
                if resp.status_code < 400:
                    return self._parse(resp)
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    break
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * (attempt + 1))
        raise DependencyError(f"model endpoint {self.base_url} failed: {last}")

    def _parse(self, resp: httpx.Response) -> Generation:
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = str(choice["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise DependencyError(f"{self.base_url} did not return a chat completion") from None
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        n_tokens = _count(usage.get("completion_tokens"))
        prompt_tokens = _count(usage.get("prompt_tokens"))
        finish: Literal["stop", "length"] = (
            "length" if choice.get("finish_reason") == "length" else "stop"
        )
        return Generation(
            text=text.strip(), n_tokens=n_tokens, finish_reason=finish, prompt_tokens=prompt_tokens
        )

    def generate(
        self, requests: Sequence[GenRequest], batch_size: int = 16, progress: Progress | None = None
    ) -> list[Generation]:
        with ThreadPoolExecutor(max_workers=max(1, batch_size)) as pool:
            futures = [pool.submit(self._one, r) for r in requests]
            results = []
            for future in futures:
                results.append(future.result())
                if progress is not None:
                    progress(1)
        return results

    def close(self) -> None:
        self._client.close()


def is_url(model: str | Path) -> bool:
    return str(model).startswith(("http://", "https://"))


def make_backend(
    model: str | Path,
    backend: str = "transformers",
    *,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    api_timeout_s: float = 300.0,
    allowlist: Iterable[str] = (),
    repo_id: str | None = None,
) -> Backend:
    """Pick the backend; ``auto`` means openai for an http(s) URL, transformers otherwise.

    ``allowlist`` and ``repo_id`` decide remote code for a local model (see TransformersBackend).
    """
    if backend == "auto":
        backend = "openai" if is_url(model) else "transformers"
    if backend == "transformers":
        if is_url(model):
            raise InputError(f"{model} is a URL: use --backend openai for an HTTP endpoint")
        return TransformersBackend(
            model, device=device, seed=seed, threads=threads, allowlist=allowlist, repo_id=repo_id
        )
    if backend == "openai":
        if not is_url(model):
            raise InputError(f"the openai backend needs an http(s) URL, got {model}")
        return OpenAIBackend(
            str(model), model=api_model, api_key=api_key, timeout_s=api_timeout_s, seed=seed
        )
    raise InputError(f"unknown backend {backend!r} (expected transformers, openai or auto)")


def timed(fn: Callable[[], list[Generation]]) -> tuple[list[Generation], float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
