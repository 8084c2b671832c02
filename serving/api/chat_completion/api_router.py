"""The route of ``POST /v1/chat/completions``: read the body (bounded in size and time),
validate it, and run the work until it is done or its client leaves."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.chat_completion.protocol import parse_request
from serving.api.chat_completion.serving import ServingChat
from serving.api.disconnect import cancel_on_disconnect
from serving.api.state import CHAT_PATH, serving_state
from uptake.http_server import read_body

router = APIRouter()


@router.post(CHAT_PATH)
async def create_chat_completion(raw: Request) -> Response:
    limits = serving_state(raw).limits
    body = await read_body(raw, limits.max_request_bytes, timeout_s=limits.body_timeout_s)
    request = parse_request(body)
    chat: ServingChat = raw.app.state.chat
    return await cancel_on_disconnect(raw, chat.create(request, raw))
