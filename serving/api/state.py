"""What the routes share, kept on ``app.state.serving`` (as vLLM keeps its handlers on
``app.state``): the swap manager, the metrics, the request limits."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from serving.metrics import ServingMetrics
from serving.swap import SwapManager

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class RequestLimits:
    max_request_bytes: int
    body_timeout_s: float
    default_max_tokens: int
    max_tokens_limit: int


@dataclass(frozen=True)
class ServingState:
    manager: SwapManager
    metrics: ServingMetrics
    limits: RequestLimits


def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


def request_model(request: Request) -> str:
    """The served model this request named ("" until it is known to be served here: a
    client's typo is not a metrics label)."""
    return str(getattr(request.state, "model", ""))


def request_version(request: Request) -> str | None:
    """``model/version`` of the version answering, once the request holds a lease."""
    label = getattr(request.state, "version", None)
    return str(label) if label else None
