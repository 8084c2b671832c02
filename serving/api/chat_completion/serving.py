"""The work behind ``POST /v1/chat/completions``: a lease on the version answering, the
engine's answer, the response (vLLM's ``OpenAIServingChat``).

A request holds its lease (``async with manager.lease``) from before its answer starts to its
last byte, streams included: a stream's lease moves to the response, which gives it back when
it is done, however it ends. A stream's response starts only once the engine admitted the
request (its prompt rendered and fits), so such errors are a status, not an error chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.api.chat_completion.protocol import (
    DONE,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    Usage,
    completion_id,
    tool_call_deltas,
)
from serving.api.disconnect import CLIENT_CLOSED
from serving.api.errors import VERSION_HEADER, as_api_error
from serving.api.protocol import ErrorResponse
from serving.api.state import RequestLimits
from serving.engine import TextDelta
from serving.metrics import ServingMetrics
from serving.swap import ServedVersion, SwapManager

log = logging.getLogger(__name__)


class LeasedStreamingResponse(StreamingResponse):
    """A stream that runs ``on_close`` when it is over, whether it finished, failed or its
    client left: what it holds (the version's lease) is given back exactly once."""

    def __init__(
        self,
        content: AsyncIterator[str],
        *,
        on_close: Callable[[], Awaitable[None]],
        headers: dict[str, str],
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


class ServingChat:
    def __init__(self, manager: SwapManager, metrics: ServingMetrics, limits: RequestLimits):
        self.manager = manager
        self.metrics = metrics
        self.limits = limits

    async def create(self, request: ChatCompletionRequest, raw: Request) -> Response:
        try:
            return await self._create(request, raw, time.monotonic())
        except asyncio.CancelledError:  # the client left first (cancel_on_disconnect)
            if getattr(raw.state, "model", None):
                self.metrics.requests.labels(request.model, str(CLIENT_CLOSED)).inc()
            raise

    async def _create(
        self, request: ChatCompletionRequest, raw: Request, started: float
    ) -> Response:
        async with contextlib.AsyncExitStack() as stack:
            served = await stack.enter_async_context(self.manager.lease(request.model))
            raw.state.model, raw.state.version = request.model, served.label
            gen = request.generation(self.limits.default_max_tokens, self.limits.max_tokens_limit)
            if not request.stream:
                result = await served.loaded.generate(gen)
                self._count(
                    request.model, "200", result.prompt_tokens, result.completion_tokens, started
                )
                body = ChatCompletionResponse.of(
                    completion_id(), request.model, served.label, result
                )
                return JSONResponse(
                    body.model_dump(mode="json"), headers={VERSION_HEADER: served.label}
                )
            deltas = served.loaded.stream(gen)
            stack.push_async_callback(deltas.aclose)
            await anext(deltas)  # admitted: the request's own errors raise before this
            events = self._events(request, served, deltas, started)
            stack.push_async_callback(events.aclose)
            return LeasedStreamingResponse(
                events,
                on_close=stack.pop_all().aclose,
                headers={VERSION_HEADER: served.label, "cache-control": "no-cache"},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, model: str, status: str, prompt: int, completion: int, started: float) -> None:
        self.metrics.requests.labels(model, status).inc()
        self.metrics.latency.labels(model).observe(time.monotonic() - started)
        self.metrics.tokens.labels(model, "prompt").inc(prompt)
        self.metrics.tokens.labels(model, "completion").inc(completion)

    async def _events(
        self,
        request: ChatCompletionRequest,
        served: ServedVersion,
        deltas: AsyncGenerator[TextDelta, None],
        started: float,
    ) -> AsyncGenerator[str, None]:
        model, label, cid = request.model, served.label, completion_id()

        def chunk(**kw: object) -> str:
            return ChatCompletionChunk.make(cid, model, label, **kw).sse()  # type: ignore[arg-type]

        usage = request.stream_options is not None and request.stream_options.include_usage
        status, prompt, completion = str(CLIENT_CLOSED), 0, 0
        try:
            yield chunk(delta=DeltaMessage(role="assistant", content=""))
            async for delta in deltas:
                if delta.text:
                    yield chunk(delta=DeltaMessage(content=delta.text))
                if delta.finish_reason is None:
                    continue
                prompt, completion = delta.prompt_tokens or 0, delta.completion_tokens or 0
                if delta.tool_calls:
                    yield chunk(delta=DeltaMessage(tool_calls=tool_call_deltas(delta.tool_calls)))
                yield chunk(delta=DeltaMessage(), finish_reason=delta.finish_reason)
                break
            if usage:
                yield chunk(usage=Usage.of(prompt, completion))
            status = "200"
        except Exception as exc:  # after the first byte a failure can only be a chunk
            error = as_api_error(exc)
            status = str(error.status)
            if error.status >= 500:
                log.error("streaming failed on %s: %s", label, exc)
            yield f"data: {ErrorResponse(error=error.info).model_dump_json()}\n\n"
        finally:
            self._count(model, status, prompt, completion, started)
        yield DONE
