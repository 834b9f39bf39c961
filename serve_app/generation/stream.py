"""Streamed generation over HTTP: Server-Sent Events in OpenAI's format (`data: {json}` events,
then `data: [DONE]`), held to the request's limits while they run.

`open_generation_stream` waits for the first chunk before the response starts, so a request the
model refuses still gets its ordinary 4xx/5xx; a failure after that can only be reported inside
the stream, as an OpenAI-shaped `{"error": ...}` event (the official client raises it). Each
chunk must arrive before the request's deadline, and the tokens it adds (prompt and completion)
are charged to the caller as it arrives. Past the deadline, or once the caller has spent more
than its tokens-per-minute budget, the stream ends with such an error event; the tokens already
sent stay charged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, TypeVar

import orjson
from starlette.responses import StreamingResponse

from deployments.contract import GenerationChunk
from serve_app.errors import APIError, InternalError
from serve_app.gateway.deadline import Deadline
from serve_app.gateway.rate_limit import TokenMeter
from serve_app.generation.params import ChoiceCounts


async def open_generation_stream(
    chunks: AsyncGenerator[GenerationChunk, None], deadline: Deadline, meter: TokenMeter
) -> AsyncGenerator[GenerationChunk, None]:
    """`chunks` under the limits, the first already awaited (see `open_stream`)."""
    return await open_stream(_within_limits(chunks, deadline, meter))


async def _within_limits(
    chunks: AsyncGenerator[GenerationChunk, None], deadline: Deadline, meter: TokenMeter
) -> AsyncGenerator[GenerationChunk, None]:
    charged = 0
    counts = ChoiceCounts()
    async with aclosing(chunks):  # cut short: the generation behind it stops now
        while True:
            try:
                chunk = await deadline.run(anext(chunks))
            except StopAsyncIteration:
                return
            counts.add(chunk)
            used = counts.used()
            within_budget = meter.charge(used - charged)
            charged = used
            yield chunk
            if not within_budget and chunk.finish_reason is None:
                raise meter.overspent()


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
