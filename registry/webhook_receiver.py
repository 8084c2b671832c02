"""Receives MLflow's ``model_version_tag.set`` webhook: the fast path for UI approvals.

Every delivery is verified before anything else (HMAC-SHA256 over delivery id, timestamp and
body, compared in constant time; a timestamp older than ``max_age_s`` is refused) and its
delivery id is remembered in the state store, so a captured request replayed later gets 409.
The body is read under a cap (``MAX_BODY_BYTES``; MLflow's deliveries are a few hundred
bytes): anything larger gets 413 before it is read, so no client can fill the memory.
The body is then only a hint: the approval worker re-reads the tag from MLflow before it
acts, so even a valid delivery cannot promote what is not approved in MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from registry import db
from uptake.http_server import BadContentLength, BodyTooLarge, HttpServer, read_body
from uptake.mlflow_contract import APPROVAL_TAG
from uptake.webhooks import WebhookRejected, verify_mlflow_signature

log = logging.getLogger(__name__)

HOOK_PATH = "/hooks/mlflow"
MAX_BODY_BYTES = 64 * 1024


class DeliveryLog:
    """Delivery ids seen within the freshness window (older ones are refused as stale)."""

    def __init__(self, engine: Engine, max_age_s: float) -> None:
        self.engine = engine
        self.max_age_s = max_age_s

    def first_time(self, delivery_id: str) -> bool:
        at = db.now()
        t = db.webhook_deliveries
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.delete(t).where(t.c.received_at < at - 2 * self.max_age_s)
                )  # anything this old would be refused as stale anyway
                conn.execute(sa.insert(t).values(delivery_id=delivery_id, received_at=at))
        except IntegrityError:
            return False
        return True

    def forget(self, delivery_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(db.webhook_deliveries).where(
                    db.webhook_deliveries.c.delivery_id == delivery_id
                )
            )


class ReceiverStats:
    def __init__(self) -> None:
        self.accepted = 0
        self.ignored = 0
        self.rejected = 0
        self.replayed = 0
        self.too_large = 0


def make_app(
    secret: str,
    deliveries: DeliveryLog,
    on_verdict: Callable[[str, str], None],
    stats: ReceiverStats | None = None,
) -> FastAPI:
    """``on_verdict(model, version)`` is called for each fresh, verified approval tag."""
    app = FastAPI(title="uptake promoter webhooks", docs_url=None, redoc_url=None)
    counts = stats or ReceiverStats()
    app.state.stats = counts

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(HOOK_PATH)
    async def mlflow_hook(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            counts.too_large += 1
            log.warning("refused MLflow webhook from %s: %s", request.client, exc)
            return JSONResponse({"error": str(exc)}, status_code=413)
        except BadContentLength as exc:
            counts.rejected += 1
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            verified = verify_mlflow_signature(
                secret, dict(request.headers), body, max_age_s=deliveries.max_age_s
            )
        except WebhookRejected as exc:
            counts.rejected += 1
            log.warning("refused MLflow webhook from %s: %s", request.client, exc)
            return JSONResponse({"error": str(exc)}, status_code=401)
        if not deliveries.first_time(verified.delivery_id):
            counts.replayed += 1
            log.warning("refused replayed MLflow delivery %s", verified.delivery_id)
            return JSONResponse({"error": "delivery already received"}, status_code=409)
        try:
            payload = json.loads(body)
            entity, action = payload.get("entity"), payload.get("action")
            data = payload.get("data") or {}
            name, version = str(data.get("name", "")), str(data.get("version", ""))
            key, value = data.get("key"), data.get("value")
        except (json.JSONDecodeError, AttributeError):
            counts.ignored += 1
            return JSONResponse({"error": "body is not a JSON object"}, status_code=400)
        relevant = (
            (entity, action) == ("model_version_tag", "set")
            and key == APPROVAL_TAG
            and value in ("approved", "rejected")
            and name
            and version
        )
        if not relevant:
            counts.ignored += 1
            return JSONResponse({"status": "ignored"}, status_code=200)
        counts.accepted += 1
        on_verdict(name, version)
        return JSONResponse({"status": "accepted"}, status_code=202)

    return app


class ReceiverServer(HttpServer):
    """The shared threaded uvicorn server (``uptake.http_server``); ``url`` is the hook's."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        super().__init__(app, host, port, name="the promoter's webhook receiver")
        self.base_url = self.url
        self.url = f"{self.base_url}{HOOK_PATH}"
