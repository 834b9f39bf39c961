"""The ingress's embedding coalescer: what it gathers, and its bound under overload.

Small requests wait in the coalescer for a gathered call while the model's calls are busy. Past
what one round of gathered calls carries, more small requests are refused at once (a 503 with
Retry-After at the API) instead of a queue growing here or one-text calls swamping the model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from deployments.contract import EmbeddingBatch
from serve_app.embedding.coalescer import (
    CALLERS_PER_CALL,
    CALLS_PER_MODEL_REPLICA,
    GATHER_INPUTS,
    MAX_COALESCED_INPUTS,
    MAX_INPUTS_PER_CALL,
    CoalescerFull,
    EmbeddingCoalescer,
    calls_by_replicas,
)
from serve_app.errors import Overloaded
from serve_app.routing.backends import HandleBackend
from serve_app.routing.replica_counts import RecentReplicaCounts, ReplicaCount
from tests.support.fakes import FakeReplicaCounts

# Small callers held for one model with one replica's calls out: four full calls.
BOUND = CALLERS_PER_CALL * CALLS_PER_MODEL_REPLICA


class _Method:
    def __init__(self, owner: Any) -> None:
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


async def _overload(
    extra: int, coalescer: EmbeddingCoalescer | None = None, bound: int = BOUND
) -> tuple[BlockedHandle, list[EmbeddingBatch | BaseException]]:
    coalescer = coalescer or EmbeddingCoalescer()
    handle = BlockedHandle()
    texts = ["x" * (1 + i % 7) for i in range(bound + extra)]
    tasks = [asyncio.create_task(coalescer.send(handle, [text])) for text in texts]
    for _ in range(50):  # let every request reach the coalescer
        await asyncio.sleep(0)
    refused = [task for task in tasks if task.done()]
    assert len(refused) == extra  # answered while the model is still blocked: no waiting
    assert sum(len(call) for call in handle.calls) <= bound
    handle.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return handle, results


def test_callers_past_one_round_of_gathered_calls_are_refused_at_once() -> None:
    assert BOUND == 4 * MAX_INPUTS_PER_CALL
    handle, results = asyncio.run(_overload(extra=40))
    refused = [r for r in results if isinstance(r, CoalescerFull)]
    served = [r for r in results if isinstance(r, EmbeddingBatch)]
    assert (len(refused), len(served)) == (40, BOUND)
    # No one-text calls on the side: every accepted request rode a gathered call.
    assert sum(len(call) for call in handle.calls) == BOUND
    assert len(handle.calls) < BOUND // 8


def test_the_bound_grows_with_the_calls_a_model_may_have_out() -> None:
    # Three replicas' worth of calls: three times the callers before a refusal.
    calls = 3 * CALLS_PER_MODEL_REPLICA
    coalescer = EmbeddingCoalescer(max_in_flight=lambda _: calls)
    _, results = asyncio.run(_overload(extra=40, coalescer=coalescer, bound=3 * BOUND))
    assert sum(isinstance(r, CoalescerFull) for r in results) == 40
    assert sum(isinstance(r, EmbeddingBatch) for r in results) == 3 * BOUND


def test_callers_held_for_one_model_do_not_refuse_another_models() -> None:
    async def run() -> EmbeddingBatch:
        coalescer = EmbeddingCoalescer()
        busy, other = BlockedHandle(), BlockedHandle()
        held = [asyncio.create_task(coalescer.send(busy, ["x"])) for _ in range(BOUND)]
        await _settle()
        with pytest.raises(CoalescerFull, match="for this model"):
            await coalescer.send(busy, ["refused"])
        other.release.set()
        answer = await coalescer.send(other, ["answered"])
        busy.release.set()
        await asyncio.gather(*held)
        return answer

    assert asyncio.run(run()).token_counts == [len("answered")]


def test_large_requests_bypass_the_bound_to_the_models_own_queue() -> None:
    async def run() -> BlockedHandle:
        coalescer = EmbeddingCoalescer(callers_per_call=0)
        handle = BlockedHandle()
        big = asyncio.create_task(coalescer.send(handle, ["t"] * (MAX_COALESCED_INPUTS + 1)))
        await asyncio.sleep(0)
        with pytest.raises(CoalescerFull):
            await coalescer.send(handle, ["small"])
        handle.release.set()
        await big
        return handle

    assert [len(call) for call in asyncio.run(run()).calls] == [MAX_COALESCED_INPUTS + 1]


def test_below_the_bound_every_small_request_is_gathered() -> None:
    first_round = [1] + [GATHER_INPUTS] * (CALLS_PER_MODEL_REPLICA - 1)
    requests = sum(first_round) + MAX_INPUTS_PER_CALL + 7

    async def run() -> BlockedHandle:
        coalescer = EmbeddingCoalescer()
        handle = BlockedHandle()
        tasks = [asyncio.create_task(coalescer.send(handle, ["a"])) for _ in range(requests)]
        for _ in range(50):
            await asyncio.sleep(0)
        handle.release.set()
        await asyncio.gather(*tasks)
        return handle

    handle = asyncio.run(run())
    # The first request finds no call out and leaves alone; while calls are out, the next take
    # the free slots in groups of GATHER_INPUTS; the rest leave in calls of at most
    # MAX_INPUTS_PER_CALL inputs as slots free up.
    sizes = [len(call) for call in handle.calls]
    assert sizes == [*first_round, MAX_INPUTS_PER_CALL, 7]


class StepHandle:
    """A handle whose calls each wait for their own release, in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.called_at: list[float] = []
        self.releases: list[asyncio.Event] = []
        self.embed = _Method(self)

    async def call(self, texts: list[str]) -> EmbeddingBatch:
        self.calls.append(list(texts))
        self.called_at.append(asyncio.get_running_loop().time())
        release = asyncio.Event()
        self.releases.append(release)
        await release.wait()
        if "boom" in texts:
            raise RuntimeError("replica failed")
        return EmbeddingBatch(
            vectors=np.array([[float(len(t))] for t in texts], dtype=np.float32),
            token_counts=[len(t) for t in texts],
        )


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_lone_request_leaves_at_once_and_answers_map_back_to_their_callers() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 1)
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["one"]))
        await _settle()
        assert handle.calls == [["one"]]  # no timer: sent before anything else arrived
        later = [asyncio.create_task(coalescer.send(handle, [t])) for t in ("bb", "ccc", "d")]
        await _settle()
        assert len(handle.calls) == 1  # the only slot is busy: they wait together
        handle.releases[0].set()
        assert (await first).token_counts == [3]
        await _settle()
        assert handle.calls[1] == ["bb", "ccc", "d"]
        handle.releases[1].set()
        answers = await asyncio.gather(*later)
        assert [a.token_counts for a in answers] == [[2], [3], [1]]
        assert [a.vectors[0, 0] for a in answers] == [2.0, 3.0, 1.0]

    asyncio.run(run())


def test_a_failed_call_fails_only_its_own_callers() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 1)
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["x"]))
        await _settle()
        doomed = [asyncio.create_task(coalescer.send(handle, [t])) for t in ("boom", "y")]
        await _settle()
        handle.releases[0].set()
        await first
        await _settle()
        handle.releases[1].set()
        for task in doomed:
            with pytest.raises(RuntimeError, match="replica failed"):
                await task
        after = asyncio.create_task(coalescer.send(handle, ["zz"]))
        await _settle()
        handle.releases[2].set()
        assert (await after).token_counts == [2]  # the lane is free again

    asyncio.run(run())


def test_a_caller_that_left_is_not_sent() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 1)
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["x"]))
        await _settle()
        gone = asyncio.create_task(coalescer.send(handle, ["gone"]))
        stays = asyncio.create_task(coalescer.send(handle, ["stays"]))
        await _settle()
        gone.cancel()
        await _settle()
        handle.releases[0].set()
        await first
        await _settle()
        assert handle.calls[1] == ["stays"]
        handle.releases[1].set()
        assert (await stays).token_counts == [5]

    asyncio.run(run())


def test_large_requests_go_straight_to_the_model() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 1)
        handle = StepHandle()
        small = asyncio.create_task(coalescer.send(handle, ["x"]))
        big = asyncio.create_task(coalescer.send(handle, ["t"] * 9))
        await _settle()
        assert sorted(len(call) for call in handle.calls) == [1, 9]  # not held behind the slot
        for release in handle.releases:
            release.set()
        await asyncio.gather(small, big)

    asyncio.run(run())


def test_a_refusal_reaches_the_api_as_overloaded_with_retry_after() -> None:
    backend = HandleBackend(BlockedHandle(), "m", EmbeddingCoalescer(callers_per_call=0))
    with pytest.raises(Overloaded) as refused:
        asyncio.run(backend.embed(["x"]))
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "1"}


def test_a_small_request_is_refused_once_the_queue_has_waited_too_long() -> None:
    async def run() -> list[EmbeddingBatch]:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 1, max_wait_s=0.05)
        handle = BlockedHandle()
        riding = asyncio.create_task(coalescer.send(handle, ["a"]))
        await _settle()
        waiting = asyncio.create_task(coalescer.send(handle, ["bb"]))
        await _settle()
        await asyncio.sleep(0.1)  # the waiting request is now older than max_wait_s
        with pytest.raises(CoalescerFull, match="waited"):
            await coalescer.send(handle, ["ccc"])
        handle.release.set()
        return [await riding, await waiting]  # those already accepted are still answered

    answers = asyncio.run(run())
    assert [a.token_counts for a in answers] == [[1], [2]]


def test_while_a_call_is_out_a_small_group_waits_out_the_gather_window() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 2, gather_window_s=0.2)
        handle = StepHandle()
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(coalescer.send(handle, ["one"]))
        await _settle()
        assert handle.calls == [["one"]]
        second_at = loop.time()
        second = asyncio.create_task(coalescer.send(handle, ["two"]))
        await asyncio.sleep(0.05)
        third = asyncio.create_task(coalescer.send(handle, ["three"]))
        await _settle()
        assert len(handle.calls) == 1  # a slot is free, but the group is still gathering
        await asyncio.sleep(0.3)  # timers fire in order: the window's (due at 0.2 s) first
        assert handle.calls[1] == ["two", "three"]
        assert handle.called_at[1] - second_at >= 0.2
        for release in handle.releases:
            release.set()
        answers = await asyncio.gather(first, second, third)
        assert [a.token_counts for a in answers] == [[3], [3], [5]]

    asyncio.run(run())


def test_a_group_with_enough_inputs_takes_a_free_slot_at_once() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(
            max_in_flight=lambda _: 2, gather_window_s=60, gather_inputs=3
        )
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["one"]))
        await _settle()
        group = [asyncio.create_task(coalescer.send(handle, [t])) for t in ("a", "bb")]
        await _settle()
        assert len(handle.calls) == 1  # 2 inputs of 3: still gathering
        group.append(asyncio.create_task(coalescer.send(handle, ["ccc", "dddd"])))
        await _settle()
        assert handle.calls[1] == ["a", "bb", "ccc", "dddd"]  # 4 inputs: no wait for the window
        for release in handle.releases:
            release.set()
        await asyncio.gather(first, *group)

    asyncio.run(run())


def test_when_the_last_call_returns_a_gathering_group_leaves_at_once() -> None:
    async def run() -> None:
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: 2, gather_window_s=60)
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["one"]))
        await _settle()
        waiting = asyncio.create_task(coalescer.send(handle, ["two"]))
        await _settle()
        assert len(handle.calls) == 1
        handle.releases[0].set()
        await first
        await _settle()
        assert handle.calls[1] == ["two"]  # nothing out any more: no reason to wait
        handle.releases[1].set()
        assert (await waiting).token_counts == [3]

    asyncio.run(run())


def test_a_limit_that_grows_lets_the_waiting_callers_out_at_the_next_call() -> None:
    async def run() -> None:
        limit = [1]
        coalescer = EmbeddingCoalescer(max_in_flight=lambda _: limit[0], gather_window_s=0)
        handle = StepHandle()
        first = asyncio.create_task(coalescer.send(handle, ["one"]))
        second = asyncio.create_task(coalescer.send(handle, ["two"]))
        await _settle()
        assert handle.calls == [["one"]]  # one call out: "two" waits
        limit[0] = 2  # the model scaled up
        third = asyncio.create_task(coalescer.send(handle, ["three"]))
        await _settle()
        assert handle.calls == [["one"], ["two", "three"]]
        for release in handle.releases:
            release.set()
        await asyncio.gather(first, second, third)

    asyncio.run(run())


class NamedHandle(StepHandle):
    deployment_name = "emb"


@pytest.mark.parametrize(
    ("running", "ingress_replicas", "expected"),
    [
        (None, 1, CALLS_PER_MODEL_REPLICA),  # not read yet: as one replica
        (1, 1, CALLS_PER_MODEL_REPLICA),
        (3, 1, 3 * CALLS_PER_MODEL_REPLICA),
        (3, 2, -(-3 * CALLS_PER_MODEL_REPLICA // 2)),  # two ingress replicas share them
        (0, 1, CALLS_PER_MODEL_REPLICA),  # at zero: the first call starts one
    ],
)
def test_calls_out_follow_the_models_running_replicas(
    running: int | None, ingress_replicas: int, expected: int
) -> None:
    async def run() -> int:
        counts: dict[str, ReplicaCount | None] = {"emb": None}
        if running is not None:
            counts["emb"] = ReplicaCount(running=running, starting=0)
        recent = RecentReplicaCounts(FakeReplicaCounts(counts), ["emb"])
        max_in_flight = calls_by_replicas(recent, lambda: ingress_replicas)
        max_in_flight(NamedHandle())  # the first read starts in the background
        await asyncio.sleep(0.05)
        return max_in_flight(NamedHandle())

    assert asyncio.run(run()) == expected
