"""The alert every channel formats: one shape, whatever event it came from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from uptake.registry_config import Severity


class Link(BaseModel):
    href: str
    text: str


class Alert(BaseModel):
    kind: str  # an AlertKind: run_failed, dead_letter, pending_approval, promoted, ...
    severity: Severity
    action: Literal["trigger", "resolve"] = "trigger"
    dedup_key: str  # stable per condition: trigger and resolve of one condition share it
    summary: str
    source: str  # the component the condition is about
    details: dict[str, str] = Field(default_factory=dict)
    links: list[Link] = Field(default_factory=list)
    event_id: str
    event_type: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class SendResult(BaseModel):
    """How one delivery attempt went: ok, worth retrying, or not."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    retry_after_s: float | None = None
