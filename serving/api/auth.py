"""The API key, checked for every request but those to a public path.

A pure ASGI middleware (vLLM's ``AuthenticationMiddleware`` does the same): it sits in front
of every route, so a route added later is guarded without doing anything, and only the paths
in ``PUBLIC_PATHS`` (probes and the metrics scraper) are open. The key is compared in constant
time.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api.protocol import ApiError

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _presented(scope: Scope) -> bytes | None:
    """The bearer token of ``Authorization``, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class ApiKeyMiddleware:
    """Answers 401 (``invalid_api_key``) unless the request presents ``key`` or its path is
    public; with no key configured it lets everything through."""

    def __init__(self, app: ASGIApp, *, key: str | None) -> None:
        self.app = app
        self.key = key.encode("utf-8") if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = _presented(scope)
        if given is not None and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        error = ApiError(
            401, "missing or wrong API key", "invalid_request_error", "invalid_api_key"
        )
        response = JSONResponse(error.body().model_dump(mode="json"), status_code=401)
        await response(scope, receive, send)
