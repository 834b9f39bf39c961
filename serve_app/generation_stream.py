"""A streamed generation held to its request's limits while it runs.

Each chunk must arrive before the request's deadline, and the tokens it adds (prompt and
completion) are charged to the caller as it arrives. Past the deadline, or once the caller has
spent more than its tokens-per-minute budget, the stream ends with an OpenAI-shaped error event
(serve_app/sse.py writes it); the tokens already sent stay charged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from deployments.generation_types import GenerationChunk
from serve_app.deadline import Deadline
from serve_app.rate_limit import TokenMeter
from serve_app.sse import open_stream


async def open_generation_stream(
    chunks: AsyncGenerator[GenerationChunk, None], deadline: Deadline, meter: TokenMeter
) -> AsyncGenerator[GenerationChunk, None]:
    """`chunks` under the limits, the first already awaited (see `open_stream`)."""
    return await open_stream(_within_limits(chunks, deadline, meter))


async def _within_limits(
    chunks: AsyncGenerator[GenerationChunk, None], deadline: Deadline, meter: TokenMeter
) -> AsyncGenerator[GenerationChunk, None]:
    charged = 0
    async with aclosing(chunks):  # cut short: the generation behind it stops now
        while True:
            try:
                chunk = await deadline.run(anext(chunks))
            except StopAsyncIteration:
                return
            used = chunk.prompt_tokens + chunk.completion_tokens
            within_budget = meter.charge(used - charged)
            charged = used
            yield chunk
            if not within_budget and chunk.finish_reason is None:
                raise meter.overspent()
