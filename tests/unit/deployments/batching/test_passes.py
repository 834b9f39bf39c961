"""The forward merger: batches that wait for a busy model leave together in the next pass."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from autoscaling.replica_stats import Timed
from deployments.batching.passes import MIN_INPUTS_PER_PART, ForwardMerger


class GatedModel:
    """Doubles numbers; each pass waits until the test opens the gate, and is recorded."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []
        self.gate = threading.Event()
        self.fail_with: Exception | None = None

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(timeout=10)
        self.passes.append(list(items))
        if self.fail_with is not None:
            raise self.fail_with
        return [2 * item for item in items]


def timed(*items: int) -> list[Timed[int]]:
    return [Timed(item, 0.0) for item in items]


def merger(model: GatedModel, observed: list[int]) -> ForwardMerger[int, int]:
    def observe(enqueued_at: Sequence[float], started_at: float, finished_at: float) -> None:
        observed.append(len(enqueued_at))

    return ForwardMerger(ThreadPoolExecutor(max_workers=1), model, observe, lambda: 0.0)


def test_batches_waiting_for_a_busy_model_share_the_next_pass() -> None:
    model, observed = GatedModel(), list[int]()
    passes = merger(model, observed)

    async def scenario() -> list[list[int]]:
        first = asyncio.create_task(passes.submit(timed(1), max_inputs=32))
        await asyncio.sleep(0.05)  # the first pass is now running (blocked on the gate)
        later = [asyncio.create_task(passes.submit(timed(10 + i, 20 + i), 32)) for i in range(3)]
        await asyncio.sleep(0.05)
        model.gate.set()
        return [await first, *[await task for task in later]]

    results = asyncio.run(scenario())
    assert results == [[2], [20, 40], [22, 42], [24, 44]]
    assert model.passes == [[1], [10, 20, 11, 21, 12, 22]]
    assert observed == [1, 6]


def test_a_pass_never_exceeds_max_inputs_but_keeps_batches_whole() -> None:
    model, observed = GatedModel(), list[int]()
    passes = merger(model, observed)

    async def scenario() -> None:
        first = asyncio.create_task(passes.submit(timed(0), max_inputs=4))
        await asyncio.sleep(0.05)
        later = [asyncio.create_task(passes.submit(timed(i, i, i), 4)) for i in range(1, 4)]
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(first, *later)

    asyncio.run(scenario())
    assert [len(p) for p in model.passes] == [1, 3, 3, 3]


def test_a_cancelled_caller_costs_no_model_work() -> None:
    model, observed = GatedModel(), list[int]()
    passes = merger(model, observed)

    async def scenario() -> list[int]:
        first = asyncio.create_task(passes.submit(timed(1), 32))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(passes.submit(timed(7, 7), 32))
        kept = asyncio.create_task(passes.submit(timed(3), 32))
        await asyncio.sleep(0.01)
        gone.cancel()
        model.gate.set()
        await first
        return await kept

    assert asyncio.run(scenario()) == [6]
    assert model.passes == [[1], [3]]


def test_a_failed_pass_reaches_every_caller_in_it_and_the_next_pass_still_runs() -> None:
    model, observed = GatedModel(), list[int]()
    passes = merger(model, observed)
    model.fail_with = RuntimeError("out of memory")
    model.gate.set()

    async def scenario() -> None:
        results = await asyncio.gather(
            passes.submit(timed(1), 32), passes.submit(timed(2), 32), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        model.fail_with = None
        assert await passes.submit(timed(5), 32) == [10]

    asyncio.run(scenario())
    assert observed == [1]  # only the successful pass is observed


@pytest.mark.parametrize("count", [1, 50])
def test_an_idle_model_runs_a_lone_batch_at_once(count: int) -> None:
    model, observed = GatedModel(), list[int]()
    model.gate.set()
    passes = merger(model, observed)
    items = list(range(count))
    assert asyncio.run(passes.submit(timed(*items), 64)) == [2 * i for i in items]


class CountingModel:
    """Records how many passes run at once; each pass holds until the test releases it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.passes: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.passes.append(list(items))
        self.release.wait(timeout=10)
        with self.lock:
            self.running -= 1
        return [2 * item for item in items]


def test_parallel_passes_start_a_second_pass_while_the_first_runs() -> None:
    model = CountingModel()
    passes = ForwardMerger(
        ThreadPoolExecutor(max_workers=2), model, lambda *_: None, lambda: 0.0, 2
    )

    async def scenario() -> list[list[int]]:
        first = asyncio.create_task(passes.submit(timed(1), 32))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(passes.submit(timed(2), 32))
        await asyncio.sleep(0.05)  # both passes now run; the next ones wait and merge
        rest = [asyncio.create_task(passes.submit(timed(3 + i), 32)) for i in range(3)]
        await asyncio.sleep(0.05)
        model.release.set()
        return [await first, await second, *[await task for task in rest]]

    results = asyncio.run(scenario())
    assert results == [[2], [4], [6], [8], [10]]
    assert model.most_at_once == 2
    assert model.passes[:2] == [[1], [2]]
    assert sorted(item for batch in model.passes[2:] for item in batch) == [3, 4, 5]
    assert len(model.passes) == 3  # the three waiting batches shared one pass


def test_a_single_pass_merger_never_runs_two_at_once() -> None:
    model = CountingModel()
    model.release.set()
    passes = ForwardMerger(ThreadPoolExecutor(max_workers=4), model, lambda *_: None, lambda: 0.0)

    async def scenario() -> None:
        await asyncio.gather(*(passes.submit(timed(i), 4) for i in range(40)))

    asyncio.run(scenario())
    assert model.most_at_once == 1


# Sizes in parts of the smallest split (MIN_INPUTS_PER_PART inputs).
M = MIN_INPUTS_PER_PART


@pytest.mark.parametrize(
    ("parallel_passes", "inputs", "parts"),
    [
        (2, 2 * M, [M, M]),
        (2, 2 * M + 1, [M + 1, M]),
        (2, 2 * M - 1, [2 * M - 1]),
        (1, 2 * M, [2 * M]),
        (3, 2 * M + 2, [M + 1, M + 1]),
        (3, 3 * M, [M, M, M]),
    ],
)
def test_a_lone_pass_splits_across_idle_slots(
    parallel_passes: int, inputs: int, parts: list[int]
) -> None:
    model = CountingModel()
    passes = ForwardMerger(
        ThreadPoolExecutor(max_workers=parallel_passes),
        model,
        lambda *_: None,
        lambda: 0.0,
        parallel_passes,
    )

    async def scenario() -> list[int]:
        lone = asyncio.create_task(passes.submit(timed(*range(inputs)), 64))
        await asyncio.sleep(0.05)  # every part has started and is held by the model
        model.release.set()
        return await lone

    results = asyncio.run(scenario())
    assert results == [2 * item for item in range(inputs)]  # in order, whatever the split
    assert sorted(len(batch) for batch in model.passes) == sorted(parts)
    assert model.most_at_once == len(parts)


def test_a_pass_beside_a_running_one_is_not_split() -> None:
    model = CountingModel()
    passes = ForwardMerger(
        ThreadPoolExecutor(max_workers=2), model, lambda *_: None, lambda: 0.0, 2
    )

    async def scenario() -> None:
        first = asyncio.create_task(passes.submit(timed(*range(2 * M)), 64))
        await asyncio.sleep(0.05)  # split over both slots, held by the model
        second = asyncio.create_task(passes.submit(timed(*range(100, 100 + 2 * M)), 64))
        await asyncio.sleep(0.05)
        model.release.set()
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    assert [len(batch) for batch in model.passes[:2]] == [M, M]
    assert [len(batch) for batch in model.passes[2:]] == [2 * M]  # no slot was idle then
