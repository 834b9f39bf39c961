"""The per-model gate: calls out at once up to the limit, the rest by tenant share; refusals,
deadlines and clients that go away leave no slot or waiter behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from serve_app.errors import RateLimited
from serve_app.gateway.config import TenantsConfig
from serve_app.gateway.tenants import Tenants, TenantSpec
from serve_app.routing.fair_shares import TENANT_SHARE, FairShares, ModelGate, in_flight_limit

TENANTS = Tenants({"big": TenantSpec(weight=1), "small": TenantSpec(weight=1)})


def gate(max_in_flight: int = 1, max_waiting: int = 8) -> ModelGate:
    return ModelGate("m", TENANTS, lambda: max_in_flight, max_waiting)


class Model:
    """Calls that finish when the test says so, in the order they started."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._release: asyncio.Event = asyncio.Event()

    def call(self, name: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            self.started.append(name)
            await self._release.wait()
            return name

        return run

    def release(self) -> None:
        self._release.set()


async def run(one: ModelGate, tenant: str, call: Callable[[], Awaitable[str]]) -> str:
    """`call` in its tenant's turn, its slot released when it is done."""
    slot = await one.enter(tenant, 1)
    try:
        return await call()
    finally:
        slot.release()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_waiting_calls_leave_by_share_and_every_caller_gets_its_answer() -> None:
    async def scenario() -> None:
        model, one = Model(), gate(max_in_flight=1)
        tasks = [asyncio.create_task(run(one, "big", model.call(f"big{i}"))) for i in range(4)]
        await settle()
        tasks.append(asyncio.create_task(run(one, "small", model.call("small"))))
        await settle()
        assert (one.in_flight, one.waiting) == (1, 4)
        model.release()
        assert [await task for task in tasks] == ["big0", "big1", "big2", "big3", "small"]
        # small waited for the call already out (big's, which counts against big's share),
        # then went before big's backlog.
        assert model.started == ["big0", "small", "big1", "big2", "big3"]
        assert (one.in_flight, one.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_full_queue_refuses_the_tenant_over_its_share_at_once() -> None:
    async def scenario() -> None:
        model, one = Model(), gate(max_in_flight=1, max_waiting=2)
        out = asyncio.create_task(run(one, "big", model.call("out")))
        waiting = [asyncio.create_task(run(one, "big", model.call(f"w{i}"))) for i in range(2)]
        await settle()
        with pytest.raises(RateLimited) as refused:
            await run(one, "big", model.call("late"))
        assert refused.value.code == TENANT_SHARE
        assert refused.value.status_code == 429
        assert refused.value.headers["Retry-After"] == "1"
        assert "'big' is over its share" in refused.value.message
        # The small tenant is not refused: big's last waiter is, in its place.
        small = asyncio.create_task(run(one, "small", model.call("small")))
        await settle()
        with pytest.raises(RateLimited, match="'big'"):
            await waiting[1]
        model.release()
        assert await small == "small"
        assert await out == "out"
        assert await waiting[0] == "w0"
        assert "w1" not in model.started
        assert "late" not in model.started
        assert (one.in_flight, one.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_waiter_whose_client_goes_or_whose_deadline_passes_leaves_nothing() -> None:
    async def scenario() -> None:
        model, one = Model(), gate(max_in_flight=1)
        out = asyncio.create_task(run(one, "big", model.call("out")))
        gone = asyncio.create_task(run(one, "big", model.call("gone")))
        await settle()
        gone.cancel()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await run(one, "small", model.call("late"))
        assert (one.in_flight, one.waiting) == (1, 0)
        model.release()
        assert await out == "out"
        assert gone.cancelled()
        assert model.started == ["out"]
        assert (one.in_flight, one.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_slot_given_just_as_the_client_goes_passes_to_the_next() -> None:
    async def scenario() -> None:
        model, one = Model(), gate(max_in_flight=1)
        waiters: list[asyncio.Task[str]] = []

        async def out_call() -> str:
            await model.call("out")()
            # Runs after the gate hands `first` the slot and before `first` wakes up.
            asyncio.get_running_loop().call_soon(waiters[0].cancel)
            return "out"

        out = asyncio.create_task(run(one, "big", out_call))
        waiters.append(asyncio.create_task(run(one, "big", model.call("first"))))
        waiters.append(asyncio.create_task(run(one, "big", model.call("second"))))
        await settle()
        model.release()
        assert await out == "out"
        assert await waiters[1] == "second"
        assert waiters[0].cancelled()
        assert model.started == ["out", "second"]
        assert (one.in_flight, one.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_slot_released_twice_frees_one_place_and_gates_are_per_model() -> None:
    async def scenario() -> None:
        shares = FairShares(TENANTS, TenantsConfig(file="x", max_in_flight_per_model=1))
        slot = await shares.enter("m", "big", 1)
        other_model = await shares.enter("n", "big", 1)
        waiter = asyncio.create_task(shares.enter("m", "unknown-is-default", 1))
        await settle()
        assert not waiter.done()
        slot.release()
        slot.release()
        second = await waiter
        assert (shares.gate("m").in_flight, shares.gate("m").waiting) == (1, 0)
        for held in (second, other_model):
            held.release()
        assert shares.gate("m").in_flight == shares.gate("n").in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("fixed", "per_replica", "model_replicas", "ingress_replicas", "expected"),
    [
        (None, 16, 1, 1, 16),
        (None, 16, 3, 1, 48),  # the model scaled up: more out at once
        (None, 16, 3, 2, 24),  # two ingress replicas send half each
        (None, 5, 1, 2, 3),  # shares round up
        (None, 1, 1, 4, 1),  # never below one
        (None, 16, None, 1, 16),  # unknown: as one replica
        (None, 16, 0, 1, 16),  # at zero: as one replica, whose first call starts it
        (4, 16, 3, 1, 4),  # a fixed limit holds whatever the replicas
    ],
)
def test_the_in_flight_limit_follows_the_model_and_ingress_replicas(
    fixed: int | None,
    per_replica: int,
    model_replicas: int | None,
    ingress_replicas: int,
    expected: int,
) -> None:
    config = TenantsConfig(
        file="x", max_in_flight_per_model=fixed, max_in_flight_per_replica=per_replica
    )
    assert in_flight_limit(config, lambda: model_replicas, lambda: ingress_replicas) == expected


def test_a_fixed_in_flight_limit_reads_no_replica_count() -> None:
    def unread() -> int:
        raise AssertionError("a fixed limit needs no count")

    config = TenantsConfig(file="x", max_in_flight_per_model=4)
    assert in_flight_limit(config, unread, unread) == 4


def test_when_the_model_scales_up_waiting_calls_go_out_at_the_next_entry() -> None:
    async def scenario() -> None:
        replicas = [1]
        config = TenantsConfig(file="x", max_in_flight_per_replica=1)
        shares = FairShares(TENANTS, config, model_replicas=lambda model: replicas[0])
        model = Model()
        tasks = [
            asyncio.create_task(run(shares.gate("m"), "big", model.call(f"c{i}"))) for i in range(4)
        ]
        await settle()
        assert model.started == ["c0"]
        replicas[0] = 3
        tasks.append(asyncio.create_task(run(shares.gate("m"), "small", model.call("new"))))
        await settle()
        # The next entry sees the new limit: two more out, small's first (below its share).
        assert model.started == ["c0", "new", "c1"]
        model.release()
        assert [await task for task in tasks] == ["c0", "c1", "c2", "c3", "new"]
        assert shares.gate("m").in_flight == 0

    asyncio.run(scenario())
