"""Work for a client stops when the client goes away (vLLM's ``with_cancellation``).

Once a request's body is read, the only message the server can still receive for it is
``http.disconnect``. ``cancel_on_disconnect`` runs the route's work and waits for that message
at the same time; if it comes first the work is cancelled, which frees the request's place in
its version's queue, or its row in a running batch at the next token. Without it a
non-streaming request whose client had left kept its place and its row to the end: after 64
such requests a two-token request waited 29.9 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from fastapi import Request
from fastapi.responses import Response

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection"; never sent


async def until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """``work``'s response, or (the client left first) ``work`` cancelled and a 499."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    if task.cancelled() or not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return Response(status_code=CLIENT_CLOSED)
    return task.result()
