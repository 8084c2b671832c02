"""``build_app``: the routers, the exception handlers and the authentication, put together
once (vLLM's ``build_app``)."""

from __future__ import annotations

from fastapi import FastAPI

from serving.api.auth import ApiKeyMiddleware
from serving.api.chat_completion.api_router import router as chat_router
from serving.api.chat_completion.serving import ServingChat
from serving.api.errors import VERSION_HEADER, install_exception_handlers
from serving.api.health.api_router import router as health_router
from serving.api.models.api_router import router as models_router
from serving.api.state import RequestLimits, ServingState
from serving.metrics import ServingMetrics
from serving.swap import SwapManager

__all__ = ["VERSION_HEADER", "build_app"]


def build_app(
    manager: SwapManager,
    metrics: ServingMetrics,
    limits: RequestLimits,
    *,
    api_key: str | None,
) -> FastAPI:
    app = FastAPI(title="uptake serving", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = ServingState(manager, metrics, limits)
    app.state.chat = ServingChat(manager, metrics, limits)
    for router in (chat_router, models_router, health_router):
        app.include_router(router)
    install_exception_handlers(app)
    app.add_middleware(ApiKeyMiddleware, key=api_key)
    return app
