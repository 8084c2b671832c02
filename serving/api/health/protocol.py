"""The probes' answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool  # every served model has a champion loaded
    models: dict[str, str | None]  # model -> version answering (None: none yet)
