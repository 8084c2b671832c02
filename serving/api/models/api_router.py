"""``GET /v1/models``: one card per served registered model, with the version answering."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serving.api.models.protocol import ModelCard, ModelList
from serving.api.state import serving_state

router = APIRouter()


@router.get("/v1/models")
async def list_models(raw: Request) -> ModelList:
    versions = serving_state(raw).manager.status()
    return ModelList(data=[ModelCard(id=m, version=v) for m, v in versions.items()])
