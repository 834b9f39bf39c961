"""A request's `n` choices: one job per choice, started together so they are rows of the same
batch (the running continuous batch, or one static `generate`), their chunks merged into one
stream in the order they come, each tagged with its choice's index.

With a seed, choice 0 uses it as is (n=1 answers as before) and choice i a seed derived from
it, so the choices differ and the whole answer repeats. `echo` puts the prompt first in every
choice (with its tokens' logprobs when asked); with max_tokens 0 that is the whole choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from deployments.contract import GenerationChunk, TokenLogprob

if TYPE_CHECKING:  # the deployment module imports this one, and it must not import torch
    from deployments.generation.progress import GenerationJob

Stream = AsyncGenerator[GenerationChunk, None]
MAX_SEED = 2**63 - 1


def choice_seed(seed: int | None, index: int) -> int | None:
    if seed is None or index == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def choice_jobs(job: GenerationJob, n: int) -> list[GenerationJob]:
    """`n` rows of one prompt: the same tokens, each its own seed, cancel flag and index."""
    if n == 1:
        return [job]
    return [
        replace(
            job,
            sampling=replace(job.sampling, seed=choice_seed(job.sampling.seed, i)),
            cancelled=threading.Event(),
            index=i,
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class Echo:
    """The prompt that starts every choice, with its tokens' logprobs when asked."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


async def choice_stream(job: GenerationJob, echo: Echo | None, generate: Stream) -> Stream:
    """One choice: the echoed prompt, then `generate`'s chunks (none for max_tokens 0)."""
    prompt_tokens = len(job.prompt_ids)
    async with aclosing(generate):
        if echo is not None:
            yield GenerationChunk(
                echo.text, prompt_tokens, 0, index=job.index, logprobs=echo.logprobs
            )
        if job.max_tokens == 0:
            yield GenerationChunk("", prompt_tokens, 0, "length", index=job.index)
            return
        async for chunk in generate:
            yield chunk


def choices_stream(
    jobs: Sequence[GenerationJob], echo: Echo | None, generate: Callable[[GenerationJob], Stream]
) -> Stream:
    streams = [
        generate(job)
        if echo is None and job.max_tokens > 0  # the batcher's own generator, not re-yielded
        else choice_stream(job, echo, generate(job))
        for job in jobs
    ]
    return streams[0] if len(streams) == 1 else merged(streams)


@dataclass(frozen=True)
class _Failed:
    error: Exception


_ENDED = object()


async def merged(streams: Sequence[Stream]) -> Stream:
    """The chunks of all `streams` as they come. Closing it (the caller went away) or one
    stream failing closes every stream, so their rows leave the batch now."""
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump(stream: Stream) -> None:
        try:
            async with aclosing(stream):
                async for chunk in stream:
                    queue.put_nowait(chunk)
        except Exception as exc:  # noqa: BLE001 (handed to the reader, which raises it)
            queue.put_nowait(_Failed(exc))
        finally:
            queue.put_nowait(_ENDED)

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is _ENDED:
                running -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                assert isinstance(item, GenerationChunk)
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
