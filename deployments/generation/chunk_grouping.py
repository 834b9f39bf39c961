"""Streamed chunks regrouped by completion tokens (`stream_interval`): each choice's first chunk
at once, then one chunk per `interval` tokens or more, and its last chunk (the one with a finish
reason) at once.

Every chunk of a stream travels from the replica through Serve's handle, the ingress's SSE
encoder and HAProxy to the client; on a small model that trip, not the model, bounds how many
streams a replica serves. Fewer, larger chunks trade the evenness of the stream for that cost;
the first chunk is never held, so the time to the first token does not move.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from deployments.contract import GenerationChunk


async def grouped_by_tokens(
    chunks: AsyncGenerator[GenerationChunk, None], interval: int
) -> AsyncGenerator[GenerationChunk, None]:
    """`chunks` (possibly of several choices, interleaved) regrouped per choice; one choice's
    chunks keep their order, and their text and logprobs are unchanged."""
    sent_tokens: dict[int, int] = {}  # choice index -> completion tokens at its last chunk out
    held: dict[int, list[GenerationChunk]] = {}
    async with aclosing(chunks):  # closed early: the generation behind it stops now
        async for chunk in chunks:
            index = chunk.index
            waiting = held.setdefault(index, [])
            waiting.append(chunk)
            sent = sent_tokens.get(index, 0)
            # Nothing is held until a completion token is out (an echoed prompt has none).
            first = sent == 0
            if (
                first
                or chunk.finish_reason is not None
                or chunk.completion_tokens - sent >= interval
            ):
                sent_tokens[index] = chunk.completion_tokens
                del held[index]
                yield GenerationChunk.joined(waiting)
    # A source that ends without a finish reason still hands over every token it made.
    for waiting in held.values():
        yield GenerationChunk.joined(waiting)
