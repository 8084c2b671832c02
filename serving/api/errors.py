"""Every failure a route can raise, answered in one place as OpenAI's error body.

The routes raise; the handlers installed here by ``install_exception_handlers`` turn each
exception class into its status, ``type`` and ``code`` (``ERRORS``), add the
``x-uptake-model-version`` header once the request holds a version, and count the answer in
``uptake_serving_requests_total``. A new failure is one more row, not one more ``try``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from serving.api.protocol import ApiError
from serving.api.state import CHAT_PATH, request_model, request_version, serving_state
from serving.engine import QueueFull, ToolsUnsupported, VersionClosed
from serving.swap import NoChampion, UnknownModel
from uptake.errors import InputError
from uptake.http_server import BadContentLength, BodyTimeout, BodyTooLarge

log = logging.getLogger(__name__)

VERSION_HEADER = "x-uptake-model-version"

# exception class -> (status, OpenAI error type, code); the most specific class wins
ERRORS: dict[type[Exception], tuple[int, str, str]] = {
    ClientDisconnect: (499, "invalid_request_error", "client_closed"),  # left mid-body: no answer
    BodyTooLarge: (413, "invalid_request_error", "request_too_large"),
    BadContentLength: (400, "invalid_request_error", "invalid_request"),
    BodyTimeout: (408, "invalid_request_error", "request_timeout"),
    UnknownModel: (404, "invalid_request_error", "model_not_found"),
    NoChampion: (503, "service_unavailable", "no_champion"),
    QueueFull: (429, "rate_limit_error", "queue_full"),
    VersionClosed: (503, "service_unavailable", "version_closed"),
    ToolsUnsupported: (400, "invalid_request_error", "tools_unsupported"),
    InputError: (400, "invalid_request_error", "invalid_prompt"),  # the engine refused it
}


def _messages(exc: BaseException) -> str:
    if isinstance(exc, UnknownModel):
        return f"the model {exc.args[0]!r} is not served here; see /v1/models"
    if isinstance(exc, NoChampion):
        return f"{exc.args[0]} has no champion loaded yet"
    return str(exc)


def as_api_error(exc: BaseException) -> ApiError:
    """The answer for ``exc``: an ``ApiError`` as raised, a row of ``ERRORS``, else a 500."""
    if isinstance(exc, ApiError):
        return exc
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, type_, code = ERRORS[cls]
            headers = {}
            if isinstance(exc, QueueFull):
                headers["retry-after"] = str(exc.retry_after_s)
            if isinstance(exc, BodyTimeout):
                headers["connection"] = "close"  # a slow client's connection is not kept
            return ApiError(status, _messages(exc), type_, code, headers=headers)
    return ApiError(500, f"generation failed: {exc}", "server_error", "server_error")


def error_response(request: Request, error: ApiError) -> JSONResponse:
    headers = dict(error.headers)
    version = request_version(request)
    if version is not None:
        headers[VERSION_HEADER] = version
    if request.url.path == CHAT_PATH:
        serving_state(request).metrics.requests.labels(
            request_model(request), str(error.status)
        ).inc()
    return JSONResponse(
        error.body().model_dump(mode="json"), status_code=error.status, headers=headers
    )


async def _handle(request: Request, exc: Exception) -> Response:
    error = as_api_error(exc)
    if error.status >= 500 and not isinstance(exc, ApiError | NoChampion | VersionClosed):
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    return error_response(request, error)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in OpenAI's shape."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", code)
    return error_response(request, error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    error = ApiError(
        400, f"{where}: {first['msg']}", "invalid_request_error", "invalid_parameter", param=where
    )
    return error_response(request, error)


def install_exception_handlers(app: FastAPI) -> None:
    """Once, in ``build_app``: every route's failures get their answer here."""
    handled: list[type[Exception]] = [ApiError, *ERRORS, Exception]
    for cls in handled:
        app.add_exception_handler(cls, _handle)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
