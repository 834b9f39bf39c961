"""A request that finds a pass slot free and nobody in the batch queue skips the queue and its
wait; one that finds the slots busy, more calls inside than slots, or inputs already in the queue
takes the batch queue, as batching needs."""

from __future__ import annotations

import asyncio
import threading

from autoscaling.replica_stats import Timed
from deployments.batching.passes import BatchSettings
from deployments.replica.base import ModelReplica


class DoublingReplica(ModelReplica):
    """Doubles numbers in passes that wait for the test's gate; records what took the queue."""

    task = "test"

    def __init__(self, parallel_passes: int = 1) -> None:
        self._init_replica(
            "doubler", None, BatchSettings(max_batch_size=4), parallel_passes=parallel_passes
        )
        self.gate = threading.Event()
        self.queue_open = asyncio.Event()  # created unbound; Python 3.10+ binds on first wait
        self.queue_open.set()
        self.passes: list[list[int]] = []
        self.queued: list[int] = []
        self.merger = self._merged_forward(self._double)

    def _double(self, items: list[int]) -> list[int]:
        self.gate.wait(timeout=10)
        self.passes.append(list(items))
        return [2 * item for item in items]

    async def _through_queue(self, item: Timed[int]) -> int:
        # Stands in for `@serve.batch`: one item per call, to the merger once the queue opens.
        self.queued.append(item.item)
        await self.queue_open.wait()
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


async def _settle() -> None:
    await asyncio.sleep(0.05)


async def _beside_a_running_pass(replica: DoublingReplica) -> tuple[list[int], list[int]]:
    """A request for [1], then one for [5, 6] while the first pass runs, held by the gate."""
    first = asyncio.create_task(replica.double([1]))
    await _settle()
    second = asyncio.create_task(replica.double([5, 6]))
    await _settle()
    replica.gate.set()
    return await first, await second


def test_with_the_only_slot_busy_a_request_takes_the_batch_queue() -> None:
    replica = DoublingReplica()
    assert asyncio.run(_beside_a_running_pass(replica)) == ([2], [10, 12])
    assert replica.queued == [5, 6]
    assert replica.passes[0] == [1]


def test_a_lone_request_larger_than_a_batch_still_takes_turns() -> None:
    replica = DoublingReplica()
    replica.gate.set()
    assert asyncio.run(replica.double(list(range(6)))) == [0, 2, 4, 6, 8, 10]
    assert replica.queued == list(range(6))


async def _fill_both_slots(replica: DoublingReplica) -> list[asyncio.Task[list[int]]]:
    """Requests for 1 and 2, each on its own pass slot, held by the gate."""
    running = []
    for number in (1, 2):
        running.append(asyncio.create_task(replica.double([number])))
        await _settle()
    assert replica.queued == []
    return running


def test_a_request_beside_a_running_pass_starts_on_the_free_slot() -> None:
    replica = DoublingReplica(parallel_passes=2)
    assert asyncio.run(_beside_a_running_pass(replica)) == ([2], [10, 12])
    assert replica.queued == []
    assert sorted(replica.passes) == [[1], [5, 6]]


def test_with_every_slot_busy_a_request_takes_the_batch_queue() -> None:
    async def three_requests(replica: DoublingReplica) -> list[list[int]]:
        running = await _fill_both_slots(replica)
        third = asyncio.create_task(replica.double([7]))
        await _settle()
        replica.gate.set()
        return [await task for task in (*running, third)]

    replica = DoublingReplica(parallel_passes=2)
    assert asyncio.run(three_requests(replica)) == [[2], [4], [14]]
    assert replica.queued == [7]


def test_a_request_does_not_pass_inputs_waiting_in_the_batch_queue() -> None:
    async def scenario(replica: DoublingReplica) -> list[list[int]]:
        running = await _fill_both_slots(replica)
        replica.queue_open.clear()
        queued = asyncio.create_task(replica.double([3]))  # both slots busy: the queue
        await _settle()
        replica.gate.set()
        await asyncio.gather(*running)  # both slots free again, 3 still in the queue
        later = asyncio.create_task(replica.double([4]))
        await _settle()
        replica.queue_open.set()
        return [await queued, await later]

    replica = DoublingReplica(parallel_passes=2)
    assert asyncio.run(scenario(replica)) == [[6], [8]]
    assert replica.queued == [3, 4]


def test_a_caller_gone_from_the_batch_queue_does_not_hold_later_requests_there() -> None:
    async def scenario(replica: DoublingReplica) -> list[int]:
        running = await _fill_both_slots(replica)
        replica.queue_open.clear()
        gone = asyncio.create_task(replica.double([3]))
        await _settle()
        gone.cancel()  # its input never reaches the merger, as Serve drops it
        replica.gate.set()
        await asyncio.gather(*running)
        replica.queue_open.set()
        return await replica.double([4])

    replica = DoublingReplica(parallel_passes=2)
    assert asyncio.run(scenario(replica)) == [8]
    assert replica.queued == [3]  # 4 went straight to a pass
