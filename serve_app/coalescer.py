"""Ingress-side coalescing: concurrent small embedding requests leave as one handle call.

Each handle call costs a few milliseconds of CPU on both sides (routing, serialisation, the
replica's request bookkeeping), as much as embedding one sentence on a CPU. Gathering the
requests that arrive together into one call per model pays that once for the group. The model
replica still batches across calls with its own `@serve.batch`.

`@serve.batch` keeps one queue per decorated function in the process, so items carry the
handle they are for and a gathered batch is split by model before it is sent.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np
from ray import serve

from deployments.embedding_model import EmbeddingBatch

# Requests with more inputs than this go straight to the model: they already amortise the call.
MAX_COALESCED_INPUTS = 8
_GATHERED_BATCH_SIZE = 64
_GATHERED_CONCURRENCY = 4
# Callers one round of gathered calls carries. With this many already waiting or in flight,
# more go straight to the model, whose `max_queued_requests` refuses the excess with a 503:
# under overload the queue here would otherwise grow without bound (and latency with it).
MAX_COALESCED_CALLERS = _GATHERED_BATCH_SIZE * _GATHERED_CONCURRENCY

EmbedCall = tuple[Any, list[str]]  # (DeploymentHandle, texts)


class EmbeddingCoalescer:
    """One per ingress replica. Gathered calls are in flight at most `max_concurrent_batches`
    at a time; while they run, new requests queue and leave together as the next call."""

    def __init__(self) -> None:
        self._callers = 0  # waiting for, or riding in, a gathered call

    async def embed(self, handle: Any, texts: list[str]) -> EmbeddingBatch:
        if len(texts) > MAX_COALESCED_INPUTS or self._callers >= MAX_COALESCED_CALLERS:
            batch: EmbeddingBatch = await handle.embed.remote(texts)
            return batch
        self._callers += 1
        try:
            answer = await self._gathered((handle, texts))
        finally:
            self._callers -= 1
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @serve.batch(
        max_batch_size=_GATHERED_BATCH_SIZE,
        batch_wait_timeout_s=0.0,
        max_concurrent_batches=_GATHERED_CONCURRENCY,
    )
    async def _gathered(self, calls: list[EmbedCall]) -> list[EmbeddingBatch | BaseException]:
        groups: dict[int, list[int]] = defaultdict(list)
        for index, (handle, _) in enumerate(calls):
            groups[id(handle)].append(index)
        answers: list[EmbeddingBatch | BaseException] = [RuntimeError("unanswered")] * len(calls)

        async def send(indices: list[int]) -> None:
            handle = calls[indices[0]][0]
            texts = [text for index in indices for text in calls[index][1]]
            try:
                merged: EmbeddingBatch = await handle.embed.remote(texts)
            except Exception as exc:  # noqa: BLE001 - every caller in the group gets the error
                for index in indices:
                    answers[index] = exc
                return
            start = 0
            for index in indices:
                count = len(calls[index][1])
                answers[index] = EmbeddingBatch(
                    vectors=np.ascontiguousarray(merged.vectors[start : start + count]),
                    token_counts=merged.token_counts[start : start + count],
                )
                start += count

        await asyncio.gather(*(send(indices) for indices in groups.values()))
        return answers
