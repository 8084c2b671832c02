"""The watcher's HTTP face: ``POST /hooks/hf``, ``GET /metrics``, ``GET /healthz``.

A Hub webhook only *triggers* a lookup of the repo it names, after its ``X-Webhook-Secret``
was checked in constant time: the lookup at the hub decides. A forged or replayed hook can
therefore at most cause one extra request, never a release; a flood of them is coalesced by
the scheduler (one queued lookup per source and repo, at most one per second, none while the
source backs off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from huggingface_hub import WebhookPayload
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from uptake.webhooks import WebhookRejected, verify_shared_secret
from watcher.service import WatcherService

log = logging.getLogger(__name__)

RELEVANT_SCOPES = ("repo", "repo.content", "repo.config")
RELEVANT_ACTIONS = ("create", "update")

Trigger = Callable[[str, str], object]  # (source, repo); returns whether a lookup was queued


def build_app(service: WatcherService, trigger: Trigger) -> FastAPI:
    app = FastAPI(title="uptake watcher", docs_url=None, redoc_url=None, openapi_url=None)
    hooks = service.metrics

    @app.post("/hooks/hf")
    async def hf_hook(request: Request) -> JSONResponse:
        secret = service.settings.watcher.webhook_secret
        if secret is None:
            return JSONResponse(
                {"error": "webhook secret not configured (UPTAKE_WATCHER__WEBHOOK_SECRET)"}, 503
            )
        try:
            verify_shared_secret(secret.get_secret_value(), request.headers)
        except WebhookRejected as exc:
            hooks.webhooks.labels("rejected").inc()
            log.warning("rejected Hub webhook from %s: %s", request.client, exc)
            return JSONResponse({"error": str(exc)}, 401)
        try:
            payload = WebhookPayload.model_validate_json(await request.body())
        except ValidationError as exc:
            hooks.webhooks.labels("invalid").inc()
            return JSONResponse(
                {"error": f"not a Hub webhook payload: {exc.error_count()} errors"}, 400
            )
        repo = payload.repo.name
        if (
            payload.repo.type != "model"
            or payload.event.scope not in RELEVANT_SCOPES
            or payload.event.action not in RELEVANT_ACTIONS
        ):
            hooks.webhooks.labels("ignored").inc()
            return JSONResponse({"ignored": f"{payload.repo.type} {payload.event.scope}"}, 200)
        names = [n for n, p in service.pollers.items() if p.source.watches(repo)]
        if not names:
            hooks.webhooks.labels("ignored").inc()
            return JSONResponse({"ignored": f"{repo} is not watched"}, 200)
        for name in names:
            trigger(name, repo)
        hooks.webhooks.labels("accepted").inc()
        log.info(
            "Hub webhook %s %s for %s: polling it in %s",
            payload.event.scope,
            payload.event.action,
            repo,
            names,
        )
        return JSONResponse({"repo": repo, "polling": names}, 202)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        states = {s.name: s for s in service.store.sources()}
        out = {}
        for name in service.pollers:
            s = states.get(name)
            out[name] = {
                "initialized": bool(s and s.initialized_at),
                "consecutive_failures": s.consecutive_failures if s else 0,
                "last_success_at": s.last_success_at.isoformat()
                if s and s.last_success_at
                else None,
                "last_error": s.last_error if s else None,
            }
        return {"status": "ok", "sources": out}

    return app
