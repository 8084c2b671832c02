"""Liveness, readiness and Prometheus metrics (public: ``auth.PUBLIC_PATHS``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.health.protocol import Health, Readiness
from serving.api.state import serving_state

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Health:
    return Health()


@router.get("/readyz")
async def readyz(raw: Request) -> JSONResponse:
    manager = serving_state(raw).manager
    body = Readiness(ready=manager.ready, models=manager.status())
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


@router.get("/metrics")
async def metrics(raw: Request) -> Response:
    state = serving_state(raw)
    state.metrics.observe_queues(state.manager.queue_depths())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
