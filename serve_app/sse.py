"""Server-Sent Events in OpenAI's streaming format: `data: {json}` events, then `data: [DONE]`.

`open_stream` waits for the first item before the response starts, so a request the model refuses
still gets its ordinary 4xx/5xx; a failure after that can only be reported inside the stream, as an
OpenAI-shaped `{"error": ...}` event (the official client raises it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
from starlette.responses import StreamingResponse

from serve_app.errors import APIError, InternalError

T = TypeVar("T")
logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def open_stream(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`items` with its first element already awaited (errors before any output raise here)."""
    try:
        first = await anext(items)
    except BaseException:
        await items.aclose()
        raise

    async def replay() -> AsyncGenerator[T, None]:
        async with aclosing(items):
            yield first
            async for item in items:
                yield item

    return replay()


def sse_response(events: AsyncGenerator[dict[str, Any], None]) -> StreamingResponse:
    return StreamingResponse(
        _encode(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _encode(events: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    try:
        # aclosing: a client that goes away closes the upstream generators now, not at GC.
        async with aclosing(events):
            async for event in events:
                yield sse_event(event)
    except APIError as exc:
        yield sse_event(exc.body())
    except Exception:
        logger.exception("stream failed after it started")
        yield sse_event(InternalError("The server had an error while streaming.").body())
    yield DONE
