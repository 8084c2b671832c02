"""The HTTP API: OpenAI's ``/v1/chat/completions`` and ``/v1/models``, health and metrics.

Each chat completion takes a lease on the version answering for its model when it starts and
holds it to its last byte (streams included), so a swap never changes the version under a
request; the ``x-uptake-model-version`` header names that version. Errors are OpenAI's error
bodies. With an API key configured every ``/v1`` call needs ``Authorization: Bearer <key>``,
compared in constant time; health and metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from serving.engine import GenerationRequest
from serving.metrics import ServingMetrics
from serving.openai_api import (
    DONE,
    ApiError,
    ChatCompletionRequest,
    chunk,
    completion_body,
    completion_id,
    parse_request,
)
from serving.swap import NoChampion, ServedVersion, SwapManager, UnknownModel
from uptake.errors import InputError
from uptake.http_server import BadContentLength, BodyTooLarge, read_body

log = logging.getLogger(__name__)

VERSION_HEADER = "x-uptake-model-version"


def _error(exc: ApiError, live: ServedVersion | None = None) -> JSONResponse:
    headers = {VERSION_HEADER: live.label} if live is not None else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app(
    manager: SwapManager,
    metrics: ServingMetrics,
    *,
    api_key: str | None,
    max_request_bytes: int,
    default_max_tokens: int,
    max_tokens_limit: int,
) -> FastAPI:
    app = FastAPI(title="uptake serving", docs_url=None, redoc_url=None, openapi_url=None)
    key = api_key.encode("utf-8") if api_key else None

    def authorized(request: Request) -> bool:
        if key is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), key)

    def unauthorized() -> JSONResponse:
        return _error(
            ApiError(401, "missing or wrong API key", "invalid_request_error", "invalid_api_key")
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        versions = manager.status()
        ready = manager.ready
        return JSONResponse({"ready": ready, "models": versions}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized()
        data = []
        for model, version in manager.status().items():
            data.append(
                {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "uptake",
                    "version": version,  # None while no champion is loaded
                }
            )
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        started = time.monotonic()
        try:
            body = await read_body(request, max_request_bytes)
        except BodyTooLarge as exc:
            return _error(ApiError(413, str(exc), "invalid_request_error", "request_too_large"))
        except BadContentLength as exc:
            return _error(ApiError(400, str(exc), "invalid_request_error", "invalid_request"))
        try:
            parsed = parse_request(body)
        except ApiError as exc:
            metrics.requests.labels("", str(exc.status)).inc()
            return _error(exc)
        model = parsed.model
        try:
            live = manager.acquire(model)
        except UnknownModel:
            metrics.requests.labels("", "404").inc()  # a client's typo is not a model label
            return _error(
                ApiError(
                    404,
                    f"the model {model!r} is not served here; see /v1/models",
                    "invalid_request_error",
                    "model_not_found",
                )
            )
        except NoChampion:
            metrics.requests.labels(model, "503").inc()
            return _error(
                ApiError(
                    503,
                    f"{model} has no champion loaded yet",
                    "service_unavailable",
                    "no_champion",
                )
            )
        try:
            gen = parsed.generation(default_max_tokens, max_tokens_limit)
        except ApiError as exc:
            manager.release(live)
            metrics.requests.labels(model, str(exc.status)).inc()
            return _error(exc, live)
        if parsed.stream:
            return _stream(parsed, gen, live, started)
        try:
            result = await live.loaded.generate(gen)
        except InputError as exc:
            metrics.requests.labels(model, "400").inc()
            return _error(ApiError(400, str(exc), "invalid_request_error", "invalid_prompt"), live)
        except Exception as exc:
            log.exception("generation failed on %s", live.label)
            metrics.requests.labels(model, "500").inc()
            return _error(ApiError(500, f"generation failed: {exc}", "server_error"), live)
        finally:
            manager.release(live)
        _count(model, "200", result.prompt_tokens, result.completion_tokens, started)
        return JSONResponse(
            completion_body(completion_id(), model, live.label, result),
            headers={VERSION_HEADER: live.label},
        )

    def _count(model: str, status: str, prompt: int, completion: int, started: float) -> None:
        metrics.requests.labels(model, status).inc()
        metrics.latency.labels(model).observe(time.monotonic() - started)
        metrics.tokens.labels(model, "prompt").inc(prompt)
        metrics.tokens.labels(model, "completion").inc(completion)

    def _stream(
        parsed: ChatCompletionRequest, gen: GenerationRequest, live: ServedVersion, started: float
    ) -> StreamingResponse:
        model = parsed.model
        cid = completion_id()
        usage_chunk = parsed.stream_options is not None and parsed.stream_options.include_usage

        released = False

        def release() -> None:  # once: from the stream's end, or after a client left early
            nonlocal released
            if not released:
                released = True
                manager.release(live)

        async def events() -> AsyncIterator[str]:
            status = "200"
            prompt = completion = 0
            try:
                yield chunk(cid, model, live.label, delta={"role": "assistant", "content": ""})
                async for delta in live.loaded.stream(gen):
                    if delta.text:
                        yield chunk(cid, model, live.label, delta={"content": delta.text})
                    if delta.finish_reason is not None:
                        prompt = delta.prompt_tokens or 0
                        completion = delta.completion_tokens or 0
                        yield chunk(cid, model, live.label, finish_reason=delta.finish_reason)
                if usage_chunk:
                    yield chunk(cid, model, live.label, usage=(prompt, completion))
            except InputError as exc:
                status = "400"
                yield _stream_error(ApiError(400, str(exc), "invalid_request_error"))
            except Exception as exc:
                status = "500"
                log.exception("streaming failed on %s", live.label)
                yield _stream_error(ApiError(500, f"generation failed: {exc}", "server_error"))
            finally:
                release()
                _count(model, status, prompt, completion, started)
            yield DONE

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={VERSION_HEADER: live.label, "cache-control": "no-cache"},
            background=BackgroundTask(release),
        )

    return app


def _stream_error(exc: ApiError) -> str:
    return f"data: {json.dumps(exc.body())}\n\n"
