"""A request that finds the replica idle skips the batch queue and its wait; one that finds
another request inside takes the batch queue, as batching needs."""

from __future__ import annotations

import asyncio
import threading

from autoscaling.replica_stats import Timed
from deployments.batching.passes import BatchSettings
from deployments.replica.base import ModelReplica


class DoublingReplica(ModelReplica):
    """Doubles numbers in passes that wait for the test's gate; records what took the queue."""

    task = "test"

    def __init__(self) -> None:
        self._init_replica("doubler", None, BatchSettings(max_batch_size=4))
        self.gate = threading.Event()
        self.passes: list[list[int]] = []
        self.queued: list[int] = []
        self.merger = self._merged_forward(self._double)

    def _double(self, items: list[int]) -> list[int]:
        self.gate.wait(timeout=10)
        self.passes.append(list(items))
        return [2 * item for item in items]

    async def _through_queue(self, item: Timed[int]) -> int:
        # Stands in for `@serve.batch`: one item per call, straight to the merger.
        self.queued.append(item.item)
        (doubled,) = await self._forward(self.merger, [item])
        return doubled

    async def double(self, items: list[int]) -> list[int]:
        return await self._each(items, self._through_queue, self.merger)


def test_a_lone_request_is_one_pass_without_the_batch_queue() -> None:
    replica = DoublingReplica()
    replica.gate.set()
    assert asyncio.run(replica.double([1, 2, 3])) == [2, 4, 6]
    assert replica.queued == []
    assert replica.passes == [[1, 2, 3]]


def test_a_request_beside_another_takes_the_batch_queue() -> None:
    async def two_requests(replica: DoublingReplica) -> tuple[list[int], list[int]]:
        first = asyncio.create_task(replica.double([1]))
        await asyncio.sleep(0.05)  # the first pass now runs, held by the gate
        second = asyncio.create_task(replica.double([5, 6]))
        await asyncio.sleep(0.05)
        replica.gate.set()
        return await first, await second

    replica = DoublingReplica()
    assert asyncio.run(two_requests(replica)) == ([2], [10, 12])
    assert replica.queued == [5, 6]
    assert replica.passes[0] == [1]


def test_a_lone_request_larger_than_a_batch_still_takes_turns() -> None:
    replica = DoublingReplica()
    replica.gate.set()
    assert asyncio.run(replica.double(list(range(6)))) == [0, 2, 4, 6, 8, 10]
    assert replica.queued == list(range(6))
