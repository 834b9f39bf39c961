"""The ingress's embedding coalescer under overload: its queue is bounded.

Small requests wait in the coalescer for a gathered call. Past what one round of gathered calls
carries, more requests go straight to the model, whose `max_queued_requests` refuses the excess
(a 503 at the API) instead of a queue growing here without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from ray import serve

from deployments.embedding_model import EmbeddingBatch
from serve_app.coalescer import MAX_COALESCED_CALLERS, EmbeddingCoalescer


@pytest.fixture(autouse=True)
def _replica_context(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What `@serve.batch` expects of a replica, outside one.

    It reads the replica's max_ongoing_requests, and keeps one queue per decorated function in
    the process, bound to the event loop that first used it: each test's loop gets a new one.
    """
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=1024))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    batch_method: Any = EmbeddingCoalescer._gathered
    lazy_queue = batch_method.set_max_batch_size.__self__
    lazy_queue._queue = None
    yield
    lazy_queue._queue = None


class _Method:
    def __init__(self, owner: BlockedHandle) -> None:
        self._owner = owner

    def remote(self, texts: list[str]) -> Any:
        return self._owner.call(texts)


class BlockedHandle:
    """A handle whose calls wait until `release` is set, recording what each call carried."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[list[str]] = []
        self.embed = _Method(self)

    async def call(self, texts: list[str]) -> EmbeddingBatch:
        self.calls.append(list(texts))
        await self.release.wait()
        return EmbeddingBatch(
            vectors=np.array([[float(len(t))] for t in texts], dtype=np.float32),
            token_counts=[len(t) for t in texts],
        )


async def _overload(extra: int) -> tuple[BlockedHandle, list[EmbeddingBatch]]:
    coalescer = EmbeddingCoalescer()
    handle = BlockedHandle()
    texts = ["x" * (1 + i % 7) for i in range(MAX_COALESCED_CALLERS + extra)]
    tasks = [asyncio.create_task(coalescer.embed(handle, [text])) for text in texts]
    for _ in range(50):  # let every request reach the coalescer or the handle
        await asyncio.sleep(0)
    calls_while_blocked = len(handle.calls)
    direct = [call for call in handle.calls if len(call) == 1]
    assert len(direct) >= extra, (calls_while_blocked, extra)
    handle.release.set()
    results = await asyncio.gather(*tasks)
    for text, batch in zip(texts, results, strict=True):
        assert batch.token_counts == [len(text)]
    return handle, results


def test_callers_past_one_round_of_gathered_calls_go_straight_to_the_model() -> None:
    handle, results = asyncio.run(_overload(extra=40))
    assert len(results) == MAX_COALESCED_CALLERS + 40
    assert sum(len(call) for call in handle.calls) == len(results)
    gathered = [call for call in handle.calls if len(call) > 1]
    assert gathered  # the rest still shared calls


def test_below_the_bound_every_small_request_is_gathered() -> None:
    async def run() -> BlockedHandle:
        coalescer = EmbeddingCoalescer()
        handle = BlockedHandle()
        tasks = [asyncio.create_task(coalescer.embed(handle, ["a"])) for _ in range(100)]
        for _ in range(50):
            await asyncio.sleep(0)
        handle.release.set()
        await asyncio.gather(*tasks)
        return handle

    handle = asyncio.run(run())
    assert len(handle.calls) <= 5  # a first call, then the rest gathered behind it
