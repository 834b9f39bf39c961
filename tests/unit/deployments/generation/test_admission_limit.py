"""The continuous batch's admission: at most `limit` at once, first come first served, a limit
that can move while requests wait, and waiters that give up without leaking a place."""

from __future__ import annotations

import asyncio

from deployments.generation.continuous_batcher import AdmissionLimit


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_admits_up_to_the_limit_then_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        limit = AdmissionLimit(2)
        admitted: list[int] = []

        async def take(index: int) -> None:
            await limit.acquire()
            admitted.append(index)

        tasks = [asyncio.create_task(take(i)) for i in range(5)]
        await settle()
        assert admitted == [0, 1]
        assert (limit.active, limit.waiting) == (2, 3)
        limit.release()
        await settle()
        assert admitted == [0, 1, 2]
        limit.release()
        limit.release()
        await asyncio.gather(*tasks)
        assert (limit.active, limit.waiting) == (2, 0)  # 5 admitted, 3 left
        return admitted

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_a_raised_limit_admits_waiters_without_a_release() -> None:
    async def scenario() -> None:
        limit = AdmissionLimit(1)
        await limit.acquire()
        first = asyncio.create_task(limit.acquire())
        await settle()
        assert not first.done()
        limit.limit = 3  # what reconfigure does, from any thread
        second = asyncio.create_task(limit.acquire())  # the next acquire admits both
        await asyncio.wait_for(asyncio.gather(first, second), 1)
        assert limit.active == 3

    asyncio.run(scenario())


def test_a_lowered_limit_holds_new_requests_until_enough_leave() -> None:
    async def scenario() -> None:
        limit = AdmissionLimit(3)
        for _ in range(3):
            await limit.acquire()
        limit.limit = 1
        waiter = asyncio.create_task(limit.acquire())
        limit.release()
        limit.release()
        await settle()
        assert not waiter.done()  # 1 still running: at the new limit
        limit.release()
        await asyncio.wait_for(waiter, 1)
        assert limit.active == 1

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_leaves_no_trace() -> None:
    async def scenario() -> None:
        limit = AdmissionLimit(1)
        await limit.acquire()
        quitter = asyncio.create_task(limit.acquire())
        stayer = asyncio.create_task(limit.acquire())
        await settle()
        quitter.cancel()
        await settle()
        assert limit.waiting == 1
        limit.release()
        await asyncio.wait_for(stayer, 1)
        assert (limit.active, limit.waiting) == (1, 0)

    asyncio.run(scenario())
