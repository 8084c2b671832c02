"""The built-in engine: each loaded version is a transformers model with its own batching thread.

Requests queue per version, at most ``max_queue`` waiting (one more is refused with
``QueueFull``, a 429). The version's thread takes the first one, waits ``batch_window_ms`` for
more (up to ``max_batch``) and generates them together with left padding; a sampling request
with a ``seed`` runs alone, so its answer depends only on its seed. Every row samples with its
own temperature, top_p and a ``torch.Generator`` of its own (seeded from the request's
``seed``, else at random), never the process-wide generator another thread may be using. One
``StoppingCriteria`` sees every new token of every row: it streams each row's text to its
request, and ends a row at an end-of-turn token, its own ``max_tokens``, one of its ``stop``
texts, or when its client went away (a request the API saw disconnect, waiting or running, is
dropped: its row ends at the next token and a batch whose every row ended stops);
``generate`` ends when every row has. Text and stops are tracked in linear time
(``text_stream.py``).

A request is *admitted* once its prompt is rendered and fits the context: its stream then
yields a first, empty delta, so the API answers a prompt that is too long (or that the template
rejects) with a 400 before a stream begins.

Tools: a request with tools renders them through the model's template (one without tool
support refuses it), and the answer is read for calls in the format the template teaches
(``uptake.models.tool_calls``); text from the first call marker on is held back from a stream.
A forced call (``tool_choice`` naming a function, or ``required``) starts the answer with the
format's call prefix, so the model writes only the rest.

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
import secrets
import threading
import time
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from serving.engine import (
    FinishReason,
    Generation,
    GenerationRequest,
    QueueFull,
    TextDelta,
    ToolsUnsupported,
    VersionClosed,
)
from serving.engines.text_stream import IncrementalText, StopMatcher
from uptake.errors import InputError
from uptake.models import ModelOrigin, load_model_and_tokenizer
from uptake.models.generation import GenerationPrep
from uptake.models.tool_calls import ToolCall, ToolCallStream, forced_prefix

log = logging.getLogger(__name__)

WARM_UP = GenerationRequest.model_validate(
    {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1, "temperature": 0}
)
ADMITTED = TextDelta()  # the first delta of every stream: the request has its row


class ContextExceeded(InputError):
    """The prompt alone fills the model's context: a 400 for the client, not a failure."""


@dataclass(eq=False)
class _Pending:
    """One request in the queue, and where its text goes."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[TextDelta | BaseException]
    prompt_ids: list[int] = field(default_factory=list)
    state: Literal["waiting", "taken", "gone"] = "waiting"
    cancelled: bool = False  # its client went away: drop it, waiting or running

    def send(self, item: TextDelta | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)


@dataclass(eq=False)
class _Row:
    """Decoding state of one row of a batch."""

    pending: _Pending
    limit: int  # max new tokens for this row
    text: IncrementalText
    stops: StopMatcher
    generator: Any  # torch.Generator (None: greedy)
    tools: ToolCallStream | None = None
    answer: str = ""  # decoded so far (without a forced call prefix)
    sent: int = 0  # characters of text already streamed
    done: bool = False


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
        origin: ModelOrigin | None = None,
        batch_window_ms: float,
        max_batch: int,
        max_queue: int,
        torch_threads: int | None,
    ) -> None:
        self.registered_model = registered_model
        self.version = version
        loaded = load_model_and_tokenizer(
            model_dir, allowlist=allowlist, device=device, origin=origin
        )
        self.model = loaded.model
        self.device = loaded.device
        self.prep = GenerationPrep.of(loaded, name=str(model_dir), threads=torch_threads)
        self.tokenizer = self.prep.tokenizer
        self.window_s = batch_window_ms / 1000
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batches = 0  # batches generated (the benchmark reads it)
        self.batched_requests = 0
        self.dropped = 0  # requests whose client left before their answer ended
        self._waiting = 0  # admitted to the queue, not yet in a batch
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._held: list[_Pending] = []  # taken from the queue, not in the last batch
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"serving-{registered_model}-v{version}", daemon=True
        )
        self._thread.start()

    @property
    def label(self) -> str:
        return f"{self.registered_model}/{self.version}"

    # -- the seam --------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._waiting

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
                    tool_calls=delta.tool_calls,
                )
        raise RuntimeError("the stream ended without a finish reason")  # pragma: no cover

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TextDelta, None]:
        if self._closed.is_set():
            raise VersionClosed(f"{self.label} is closed")
        self._check_tools(request)
        pending = _Pending(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(
                    f"{self.label} has {self._waiting} requests waiting, its limit "
                    "(serving.max_queue); retry shortly"
                )
            self._waiting += 1
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
            self._abandon(pending)  # a client that went away frees its place and its row

    def _check_tools(self, request: GenerationRequest) -> None:
        if not request.tools:
            return
        if not self.prep.supports_tools:
            raise ToolsUnsupported(
                f"{self.label}: the model's chat template has no tool support; "
                "send the request without tools"
            )
        if request.tool_choice != "auto" and self.prep.tool_format is None:
            raise ToolsUnsupported(
                f"{self.label}: the model's tool-call format is unknown, so a call cannot be "
                "required; use tool_choice auto"
            )

    def _abandon(self, pending: _Pending) -> None:
        with self._lock:
            if pending.state == "waiting":
                self._waiting -= 1
            pending.state = "gone"
        pending.cancelled = True

    def _claim(self, pending: _Pending) -> bool:
        """Move a waiting request into a batch; False when its client already left."""
        with self._lock:
            if pending.state != "waiting":
                return False
            pending.state = "taken"
            self._waiting -= 1
            return True

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
        items = [p for p in self._held if not p.cancelled]
        self._held = []
        while not items:
            if self._closed.is_set():
                return None
            first = self._queue.get()
            if first is None:
                return None
            if not first.cancelled:
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
            if not item.cancelled:
                items.append(item)
        key = self._key(items[0].request)
        batch = [p for p in items if self._key(p.request) == key][: self.max_batch]
        if key[0] == "seeded":
            batch = batch[:1]
        self._held = [p for p in items if p not in batch]
        return [p for p in batch if self._claim(p)]

    @staticmethod
    def _key(request: GenerationRequest) -> tuple[Any, ...]:
        """Rows sample on their own, so any requests batch together, but a seeded one alone:
        its answer must not depend on who else was in the batch (padding changes the sums)."""
        if request.temperature > 0 and request.seed is not None:
            return ("seeded", id(request))
        return ("any",)

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
            pending.send(VersionClosed(f"{self.label} is closed"))

    def _serve(self, batch: list[_Pending]) -> None:
        try:
            rows = self._rows(batch)
        except Exception as exc:  # a template that broke a bound fails that batch only
            for pending in batch:
                pending.send(exc if isinstance(exc, InputError) else InputError(str(exc)))
            return
        if not rows:
            return
        try:
            self._generate(rows)
        except Exception as exc:
            log.exception("generation failed on %s", self.label)
            for row in rows:
                if not row.done:
                    row.pending.send(RuntimeError(f"generation failed: {exc}"))

    def _rows(self, batch: list[_Pending]) -> list[_Row]:
        """The batch's admitted rows. A request whose messages the template rejects, or whose
        prompt fills the context, gets its 400 and no row (the others are served)."""
        conversations = [[m.template_dict() for m in p.request.messages] for p in batch]
        tools = [list(p.request.tools) or None for p in batch]
        rows = []
        for pending, rendered in zip(batch, self.prep.render(conversations, tools), strict=True):
            if rendered.text is None:
                pending.send(
                    InputError(
                        f"the model's chat template refuses these messages: {rendered.error}"
                    )
                )
                continue
            request = pending.request
            prefix = self._forced_prefix(request)
            pending.prompt_ids = self.prep.encode(rendered.text + prefix)
            limit = self.prep.room(request.max_tokens, len(pending.prompt_ids))
            if limit <= 0:
                pending.send(
                    ContextExceeded(
                        f"the prompt has {len(pending.prompt_ids)} tokens, which fills the "
                        f"model's context of {self.prep.max_positions}"
                    )
                )
                continue
            keep = bool(request.tools)
            rows.append(
                _Row(
                    pending,
                    limit,
                    IncrementalText(partial(self.prep.decode, keep_tool_markers=keep)),
                    StopMatcher((*request.stop, *self.prep.stop_texts)),
                    self._generator(request),
                    ToolCallStream(self.prep.tool_format, prefix) if keep else None,
                )
            )
            pending.send(ADMITTED)
        return rows

    def _forced_prefix(self, request: GenerationRequest) -> str:
        if not request.tools or request.tool_choice == "auto" or self.prep.tool_format is None:
            return ""
        name = request.forced_tool if request.tool_choice == "function" else None
        return forced_prefix(self.prep.tool_format, name)

    def _generator(self, request: GenerationRequest) -> Any:
        """The row's own random generator (None for greedy): seeded from the request, else at
        random; the process-wide generator is never touched."""
        if request.temperature == 0:
            return None
        import torch

        seed = request.seed if request.seed is not None else secrets.randbits(63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def _generate(self, rows: list[_Row]) -> None:
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )

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

        class Sample(LogitsProcessor):
            """Each sampling row draws its token with its own temperature, top_p and
            generator; the greedy search that follows then picks exactly that token."""

            def __call__(self, input_ids: Any, scores: Any) -> Any:
                for i, row in enumerate(rows):
                    if row.generator is not None and not row.done:
                        token = _sample(scores[i], row.pending.request, row.generator)
                        scores[i].fill_(float("-inf"))
                        scores[i, token] = 0.0
                return scores

        self.batches += 1
        self.batched_requests += len(rows)
        with torch.inference_mode():
            self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                max_new_tokens=max(r.limit for r in rows),
                num_beams=1,
                do_sample=False,  # sampling is Sample's, row by row
                temperature=None,
                top_p=None,
                top_k=None,
                use_cache=True,  # trained checkpoints often say use_cache=false
                eos_token_id=self.prep.eos_ids,
                pad_token_id=self.prep.pad_id,
                logits_processor=LogitsProcessorList([Sample()]),
                stopping_criteria=StoppingCriteriaList([Rows()]),
            )
        for row in rows:  # the batch ended (its longest limit) before this row said so
            if not row.done:
                self._finish(row, "length")

    def _step(self, row: _Row, token: int, eos: set[int]) -> None:
        """One new token of ``row``: stream its text, end the row when it is done."""
        if row.pending.cancelled:
            row.done = True
            self.dropped += 1
            return
        if token in eos:
            self._finish(row, "stop", counted=1)
            return
        if self._append(row, row.text.push(token)):
            return
        if len(row.text.ids) >= row.limit:
            self._finish(row, "length")
            return
        upto = len(row.answer) - row.stops.holdback
        if row.tools is not None:
            upto = min(upto, row.tools.safe_upto(row.answer))
        if upto > row.sent:
            row.pending.send(TextDelta(text=row.answer[row.sent : upto]))
            row.sent = upto

    def _append(self, row: _Row, new: str) -> bool:
        """Add decoded text to the row; True when a stop text ended it."""
        if not new:
            return False
        cut = row.stops.feed(new)
        row.answer += new
        if cut is None:
            return False
        row.answer = row.answer[:cut]
        self._finish(row, "stop", flush=False)
        return True

    def _finish(
        self, row: _Row, reason: FinishReason, *, counted: int = 0, flush: bool = True
    ) -> None:
        if row.done:
            return
        if flush and self._append(row, row.text.flush()):
            return  # the last characters held a stop: finished there
        row.done = True
        content, calls = row.answer, tuple[ToolCall, ...]()
        if row.tools is not None:
            parsed = row.tools.finish(row.answer)
            if parsed.tool_calls:
                content, calls, reason = parsed.content or "", parsed.tool_calls, "tool_calls"
        row.pending.send(_final(row, content, calls, reason, counted))
        row.sent = len(content)


def _final(
    row: _Row, content: str, calls: tuple[ToolCall, ...], reason: FinishReason, counted: int
) -> TextDelta:
    return TextDelta(
        text=content[row.sent :] if len(content) > row.sent else "",
        finish_reason=reason,
        prompt_tokens=len(row.pending.prompt_ids),
        completion_tokens=len(row.text.ids) + counted,
        tool_calls=calls,
    )


def _sample(logits: Any, request: GenerationRequest, generator: Any) -> int:
    """One token from ``logits`` at the request's temperature and top_p, drawn with
    ``generator``. The API refuses temperatures so small that the division overflows; a
    distribution that is still not finite falls back to the most likely token."""
    import torch

    scaled = logits.float() / request.temperature
    probs = torch.softmax(scaled, dim=-1)
    if request.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the tokens ahead of each
        ordered[before > request.top_p] = 0.0  # the first token is always kept
        probs = torch.zeros_like(probs).scatter_(-1, order, ordered)
    total = probs.sum()
    if not torch.isfinite(total) or total <= 0:
        return int(torch.argmax(logits))
    return int(torch.multinomial(probs / total, 1, generator=generator))


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
        max_queue: int = 256,
        torch_threads: int | None = None,
    ) -> None:
        self.device = device
        self.allowlist = list(allowlist or [])
        self.batch_window_ms = batch_window_ms
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.torch_threads = torch_threads
        self._versions: weakref.WeakSet[TransformersVersion] = weakref.WeakSet()
        self._late: set[asyncio.Task[None]] = set()
        # one load at a time: transformers builds a model under process-wide patches (meta
        # device initialisation), and two loads on two threads broke each other ("Cannot copy
        # out of meta tensor") when one server followed several models
        self._loading = threading.Lock()

    async def load(
        self,
        registered_model: str,
        version: str,
        model_dir: Path,
        origin: ModelOrigin | None = None,
    ) -> TransformersVersion:
        """Load and warm. Cancelled (a newer decision, a deadline), it returns at once; the
        loading thread cannot be stopped, so a version it still completes is closed then."""
        building = asyncio.ensure_future(
            asyncio.to_thread(
                self._build,
                registered_model,
                version,
                Path(model_dir),
                device=self.device,
                allowlist=self.allowlist,
                origin=origin,
                batch_window_ms=self.batch_window_ms,
                max_batch=self.max_batch,
                max_queue=self.max_queue,
                torch_threads=self.torch_threads,
            )
        )
        try:
            loaded = await asyncio.shield(building)
        except asyncio.CancelledError:
            building.add_done_callback(self._close_late)
            raise
        try:
            await loaded.generate(WARM_UP)
        except BaseException:
            await asyncio.shield(loaded.close())
            raise
        self._versions.add(loaded)
        return loaded

    def _build(self, *args: Any, **kwargs: Any) -> TransformersVersion:
        with self._loading:
            return TransformersVersion(*args, **kwargs)

    def _close_late(self, building: asyncio.Future[TransformersVersion]) -> None:
        if building.cancelled() or building.exception() is not None:
            return
        task = asyncio.get_running_loop().create_task(building.result().close())
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def aclose(self) -> None:
        versions = list(self._versions)
        self._versions = weakref.WeakSet()
        await asyncio.gather(*(v.close() for v in versions), *self._late, return_exceptions=True)
