"""``GET /v1/models`` on the wire: OpenAI's model list, plus the version answering."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str  # the name to put in a request's ``model``
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "uptake"
    version: str | None  # the champion answering; None while none is loaded


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
