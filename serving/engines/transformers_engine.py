"""The built-in engine: each loaded version is a transformers model with its own batching thread.

Requests queue per version. The version's thread takes the first one, waits ``batch_window_ms``
for more (up to ``max_batch``) and generates the compatible ones together with left padding:
greedy requests batch with each other, sampling ones with the same temperature and top_p;
a sampling request with a ``seed`` runs alone, so its answer does not depend on who else was
in the batch. One ``StoppingCriteria`` sees every new token of every row: it streams each
row's text to its request, and ends a row at an end-of-turn token, its own ``max_tokens``, one
of its ``stop`` texts, or when its client went away; ``generate`` ends when every row has.

Generation runs on that thread, never on the event loop: a request waits on an asyncio queue
that the thread fills through ``loop.call_soon_threadsafe``.

Prompts, padding, end-of-turn ids and the CPU-thread rule are evaluation's
(``uptake.models.generation``), so the served champion scores what its directory scored: the
model's chat template, or uptake's ChatML when it has none; a release's own template renders
in the version's warm, bounded render child (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serving.engine import Generation, GenerationRequest, TextDelta, VersionClosed
from uptake.errors import InputError
from uptake.models import load_model_and_tokenizer
from uptake.models.generation import GenerationPrep

log = logging.getLogger(__name__)

WARM_UP = GenerationRequest.model_validate(
    {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1, "temperature": 0}
)


class ContextExceeded(InputError):
    """The prompt alone fills the model's context: a 400 for the client, not a failure."""


@dataclass
class _Pending:
    """One request in the queue, and where its text goes."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[TextDelta | BaseException]
    prompt_ids: list[int] = field(default_factory=list)
    cancelled: bool = False

    def send(self, item: TextDelta | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass
class _Row:
    """Decoding state of one row of a batch."""

    pending: _Pending
    limit: int  # max new tokens for this row
    stops: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already streamed
    done: bool = False

    def holdback(self, text: str) -> int:
        """Characters at the end of ``text`` that might begin a stop text (or a split char)."""
        if text.endswith("\ufffd"):
            return len(text) - len(text.rstrip("\ufffd"))
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    longest = max(longest, n)
                    break
        return longest


class TransformersVersion:
    """One loaded version: its model, its queue and its batching thread."""

    def __init__(
        self,
        registered_model: str,
        version: str,
        model_dir: Path,
        *,
        device: str,
        allowlist: list[str],
        batch_window_ms: float,
        max_batch: int,
        torch_threads: int | None,
    ) -> None:
        self.registered_model = registered_model
        self.version = version
        loaded = load_model_and_tokenizer(model_dir, allowlist=allowlist, device=device)
        self.model = loaded.model
        self.device = loaded.device
        self.prep = GenerationPrep.of(loaded, name=str(model_dir), threads=torch_threads)
        self.tokenizer = self.prep.tokenizer
        self.window_s = batch_window_ms / 1000
        self.max_batch = max_batch
        self.batches = 0  # batches generated (the benchmark reads it)
        self.batched_requests = 0
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._held: list[_Pending] = []  # taken from the queue, not in the last batch
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"serving-{registered_model}-v{version}", daemon=True
        )
        self._thread.start()

    # -- the seam --------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> Generation:
        text: list[str] = []
        async for delta in self.stream(request):
            text.append(delta.text)
            if delta.finish_reason is not None:
                return Generation(
                    text="".join(text),
                    finish_reason=delta.finish_reason,
                    prompt_tokens=delta.prompt_tokens or 0,
                    completion_tokens=delta.completion_tokens or 0,
                )
        raise RuntimeError("the stream ended without a finish reason")  # pragma: no cover

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        if self._closed.is_set():
            raise VersionClosed(f"{self.registered_model}/{self.version} is closed")
        pending = _Pending(request, asyncio.get_running_loop(), asyncio.Queue())
        self._queue.put(pending)
        try:
            while True:
                item = await pending.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            pending.cancelled = True  # a client that went away frees its row

    async def close(self) -> None:
        self._closed.set()
        self._queue.put(None)
        await asyncio.to_thread(self._free)

    def _free(self) -> None:
        """Join the batching thread and drop the weights, off the event loop: a full
        collection pauses every thread, and the loop must keep answering on the new version."""
        import gc

        self._thread.join(30)
        self.prep.close()  # the template's render child
        self.model = None  # the weights go with the last reference
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- the batching thread ---------------------------------------------------------------

    def _take(self) -> list[_Pending] | None:
        """The next batch: waits for a first request, then ``window_s`` for more."""
        items = self._held
        self._held = []
        if not items:
            if self._closed.is_set():
                return None
            first = self._queue.get()
            if first is None:
                return None
            items = [first]
        deadline = time.monotonic() + self.window_s
        while len(items) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._closed.set()
                break
            items.append(item)
        items = [p for p in items if not p.cancelled]
        if not items:
            return []
        key = self._key(items[0].request)
        batch = [p for p in items if self._key(p.request) == key][: self.max_batch]
        if key[0] == "seeded":
            batch = batch[:1]
        self._held = [p for p in items if p not in batch]
        return batch

    @staticmethod
    def _key(request: GenerationRequest) -> tuple[Any, ...]:
        if request.temperature == 0:
            return ("greedy",)
        if request.seed is not None:
            return ("seeded", id(request))
        return ("sample", request.temperature, request.top_p)

    def _run(self) -> None:
        self.prep.set_torch_threads()
        while True:
            batch = self._take()
            if batch is None:
                break
            if batch:
                self._serve(batch)
            if self._closed.is_set() and not self._held:
                break
        leftover = [*self._held]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftover.append(item)
        for pending in leftover:
            pending.send(VersionClosed(f"{self.registered_model}/{self.version} is closed"))

    def _serve(self, batch: list[_Pending]) -> None:
        try:
            rows = self._rows(batch)
        except Exception as exc:  # a template that broke a bound fails that batch only
            for pending in batch:
                pending.send(exc if isinstance(exc, InputError) else InputError(str(exc)))
            return
        ready = []
        for row in rows:
            if row.limit <= 0:
                row.pending.send(
                    ContextExceeded(
                        f"the prompt has {len(row.pending.prompt_ids)} tokens, which fills the "
                        f"model's context of {self.prep.max_positions}"
                    )
                )
            else:
                ready.append(row)
        if not ready:
            return
        try:
            self._generate(ready)
        except Exception as exc:
            log.exception("generation failed on %s/%s", self.registered_model, self.version)
            for row in ready:
                if not row.done:
                    row.pending.send(RuntimeError(f"generation failed: {exc}"))

    def _rows(self, batch: list[_Pending]) -> list[_Row]:
        """The batch's rows; a request whose messages the template rejects gets its 400 and
        no row (the others in the batch are served)."""
        conversations = [[m.model_dump() for m in p.request.messages] for p in batch]
        rows = []
        for pending, rendered in zip(batch, self.prep.render(conversations), strict=True):
            if rendered.text is None:
                pending.send(
                    InputError(
                        f"the model's chat template refuses these messages: {rendered.error}"
                    )
                )
                continue
            pending.prompt_ids = self.prep.encode(rendered.text)
            limit = self.prep.room(pending.request.max_tokens, len(pending.prompt_ids))
            stops = tuple(s for s in (*pending.request.stop, *self.prep.stop_texts) if s)
            rows.append(_Row(pending, limit, stops))
        return rows

    def _generate(self, rows: list[_Row]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        first = rows[0].pending.request
        ids, mask = self.prep.left_pad([r.pending.prompt_ids for r in rows])
        eos = set(self.prep.eos_ids)
        owner = self

        class Rows(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                last = input_ids[:, -1].tolist()
                for row, token in zip(rows, last, strict=True):
                    if not row.done:
                        owner._step(row, int(token), eos)
                return torch.tensor([r.done for r in rows], device=input_ids.device)

        sampling: dict[str, Any]
        if first.temperature == 0:
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            sampling = {
                "do_sample": True,
                "temperature": first.temperature,
                "top_p": first.top_p,
                "top_k": None,
            }
            if first.seed is not None:
                torch.manual_seed(first.seed)
                if self.device.type == "cuda":
                    torch.cuda.manual_seed_all(first.seed)
        self.batches += 1
        self.batched_requests += len(rows)
        with torch.inference_mode():
            self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                max_new_tokens=max(r.limit for r in rows),
                num_beams=1,
                use_cache=True,  # trained checkpoints often say use_cache=false
                eos_token_id=self.prep.eos_ids,
                pad_token_id=self.prep.pad_id,
                stopping_criteria=StoppingCriteriaList([Rows()]),
                **sampling,
            )
        for row in rows:  # the batch ended (its longest limit) before this row said so
            if not row.done:
                self._finish(row, "length")

    def _step(self, row: _Row, token: int, eos: set[int]) -> None:
        """One new token of ``row``: stream its text, end the row when it is done."""
        if row.pending.cancelled:
            row.done = True
            return
        if token in eos:
            self._finish(row, "stop", counted=1)
            return
        row.ids.append(token)
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
        for stop in row.stops:
            index = text.find(stop)
            if index >= 0:
                self._finish(row, "stop", text=text[:index])
                return
        if len(row.ids) >= row.limit:
            self._finish(row, "length", text=text)
            return
        upto = len(text) - row.holdback(text)
        if upto > row.sent:
            row.pending.send(TextDelta(text=text[row.sent : upto]))
            row.sent = upto

    def _finish(
        self,
        row: _Row,
        reason: Literal["stop", "length"],
        *,
        text: str | None = None,
        counted: int = 0,
    ) -> None:
        if text is None:
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            for stop in row.stops:
                index = text.find(stop)
                if index >= 0:
                    text = text[:index]
        row.done = True
        row.pending.send(
            TextDelta(
                text=text[row.sent :] if len(text) > row.sent else "",
                finish_reason=reason,
                prompt_tokens=len(row.pending.prompt_ids),
                completion_tokens=len(row.ids) + counted,
            )
        )
        row.sent = len(text)


class TransformersEngine:
    """Loads versions in process (CPU or CUDA); ``load`` returns a warmed version."""

    name = "transformers"
    libraries: tuple[str, ...] = ("torch", "transformers", "transformers.modeling_utils")

    def __init__(
        self,
        *,
        device: str = "auto",
        allowlist: list[str] | None = None,
        batch_window_ms: float = 5.0,
        max_batch: int = 16,
        torch_threads: int | None = None,
    ) -> None:
        self.device = device
        self.allowlist = list(allowlist or [])
        self.batch_window_ms = batch_window_ms
        self.max_batch = max_batch
        self.torch_threads = torch_threads
        self._versions: weakref.WeakSet[TransformersVersion] = weakref.WeakSet()

    async def load(
        self, registered_model: str, version: str, model_dir: Path
    ) -> TransformersVersion:
        loaded = await asyncio.to_thread(
            TransformersVersion,
            registered_model,
            version,
            Path(model_dir),
            device=self.device,
            allowlist=self.allowlist,
            batch_window_ms=self.batch_window_ms,
            max_batch=self.max_batch,
            torch_threads=self.torch_threads,
        )
        try:
            await loaded.generate(WARM_UP)
        except BaseException:
            await asyncio.shield(loaded.close())
            raise
        self._versions.add(loaded)
        return loaded

    async def aclose(self) -> None:
        versions = list(self._versions)
        self._versions = weakref.WeakSet()
        await asyncio.gather(*(v.close() for v in versions), return_exceptions=True)
