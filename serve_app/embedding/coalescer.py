"""Ingress-side coalescing: concurrent small embedding requests leave as one handle call.

Each handle call costs a few milliseconds of CPU on both sides (routing, serialisation, the
replica's request bookkeeping), as much as embedding one sentence on a CPU. Gathering the
requests that arrive together into one call per model pays that once for the group. The model
replica still batches across calls with its own `@serve.batch`.

Batching here is "whatever arrived while the calls were busy": up to a limit of calls per model
are out at once (`CALLS_PER_MODEL_REPLICA` for each of the model's running replicas, this ingress
replica's share of it: `calls_by_replicas`); a request that finds them all busy waits, and when
one returns, everything waiting leaves as the next call. A request that finds no call out leaves
at once, so a lone request never waits on a timer. While calls are out, a group leaves a free
slot only once it holds `gather_inputs` inputs or its first caller has waited `gather_window_s`:
when a pass ends, its clients' next requests arrive spread over a few milliseconds, and sending
the first ones alone made 1-input passes, each costing the CPU of three inputs in a full pass
(measured at 32 clients: a third of the passes held one input; with the window, +15%
requests/s).
(`@serve.batch` does not fit here: Ray 2.60 closes a batch when its wait ends, before a
concurrency slot is free, so under steady arrivals it queues one-request batches behind the
slots and never gathers; measured: open-loop throughput fell to ~95 req/s with 1 s p50.)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployments.batching.gather import GatherQueue, Waiting, call_gathered
from deployments.contract import EmbeddingBatch
from serve_app.routing.replica_counts import RecentReplicaCounts, replica_share

# Requests with more inputs than this go straight to the model: they already amortise the call.
MAX_COALESCED_INPUTS = 8
MAX_INPUTS_PER_CALL = 64
# Calls out at once for each running replica of a model. A call holds its slot until all its
# inputs are done, and with 4 the replica's two pass slots ran dry between calls while requests
# waited here. 8 against 4 on one replica, alternating rounds on 2 cores (requests/s): 8 clients
# 92.5-114 against 81.5-102, 32 clients 142-168 against 117-142, 128 clients 196-206 against
# 138-163, with less CPU per request. A fixed 8 would give each of four replicas two.
CALLS_PER_MODEL_REPLICA = 8
# While calls are out, a group waits this long for this many inputs before taking a free slot
# (tried at 32 clients: 4 or 16 inputs did worse than 8; 3 and 5 ms did alike).
GATHER_WINDOW_S = 0.003
GATHER_INPUTS = 8
# Callers a model's lane holds (waiting or riding a call) for each call it may have out: with one
# replica's 8 calls, 256 callers, four full calls, about a second of work for a CPU replica; the
# bound grows with the model's replicas as the calls do. Past it, small requests for that model
# are refused at once (503 + Retry-After). Sending them on one call each instead (as an earlier
# version did) spent the CPU on per-call overhead just when the model was behind: measured in an
# open loop at 1.25x capacity, answers fell to under half of capacity and the queue grew past
# 30 s, with no 503 at all.
CALLERS_PER_CALL = 32


# Nor does a small request join a queue whose oldest caller has waited this long: the model is
# behind, and the count above may hold several seconds of work for a slow model.
MAX_QUEUE_WAIT_S = 1.0


class CoalescerFull(Exception):
    """The model is so far behind that this ingress already holds a round of full calls."""


@dataclass(frozen=True)
class _Limits:
    max_inputs: int
    gather_window_s: float
    gather_inputs: int


class _Lane:
    """The calls to one model's handle: at most `max_in_flight()` out (read at each pump, so a new
    limit applies from the next call), the rest gathered."""

    def __init__(self, handle: Any, limits: _Limits, max_in_flight: Callable[[], int]) -> None:
        self._handle = handle
        self._limits = limits
        self.max_in_flight = max_in_flight
        self._waiting: GatherQueue[str, EmbeddingBatch] = GatherQueue()
        self._in_flight = 0
        self.callers = 0  # waiting for, or riding in, a gathered call
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until done

    def submit(self, texts: list[str]) -> asyncio.Future[EmbeddingBatch]:
        answer = self._waiting.put(texts)
        self._pump()
        return answer

    def oldest_wait_s(self) -> float:
        """How long the longest-waiting caller has waited for a call (0 if none waits)."""
        since = self._waiting.oldest_since()
        return 0.0 if since is None else asyncio.get_running_loop().time() - since

    def _pump(self) -> None:
        max_in_flight = self.max_in_flight()
        while self._in_flight < max_in_flight and self._waiting:
            if self._in_flight and not self._gathered():
                self._pump_later()
                return
            group = self._waiting.take(self._limits.max_inputs)
            if not group:
                continue
            self._in_flight += 1
            task = asyncio.create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _gathered(self) -> bool:
        """Whether the waiting group may take a free slot while other calls are out."""
        return (
            self._waiting.items >= self._limits.gather_inputs
            or self.oldest_wait_s() >= self._limits.gather_window_s
        )

    def _pump_later(self) -> None:
        since = self._waiting.oldest_since()
        if self._timer is not None or since is None:
            return
        due = since + self._limits.gather_window_s
        self._timer = asyncio.get_running_loop().call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    async def _send(self, group: list[Waiting[str, EmbeddingBatch]]) -> None:
        try:
            await call_gathered(group, self._handle.embed.remote, _rows)
        finally:
            self._in_flight -= 1
            self._pump()


def _rows(merged: EmbeddingBatch, start: int, stop: int) -> EmbeddingBatch:
    return EmbeddingBatch(
        vectors=np.ascontiguousarray(merged.vectors[start:stop]),
        token_counts=merged.token_counts[start:stop],
    )


class EmbeddingCoalescer:
    """One per ingress replica, with one lane per model handle."""

    def __init__(
        self,
        max_in_flight: Callable[[Any], int] = lambda handle: CALLS_PER_MODEL_REPLICA,
        max_inputs_per_call: int = MAX_INPUTS_PER_CALL,
        callers_per_call: int = CALLERS_PER_CALL,
        max_wait_s: float = MAX_QUEUE_WAIT_S,
        gather_window_s: float = GATHER_WINDOW_S,
        gather_inputs: int = GATHER_INPUTS,
    ) -> None:
        self._max_wait_s = max_wait_s
        self._max_in_flight = max_in_flight  # calls out at once, by model handle
        self._limits = _Limits(max_inputs_per_call, gather_window_s, gather_inputs)
        self._callers_per_call = callers_per_call
        self._lanes: dict[int, _Lane] = {}

    async def send(self, handle: Any, texts: list[str]) -> EmbeddingBatch:
        if len(texts) > MAX_COALESCED_INPUTS:
            # Large requests amortise their own call; the model's `max_queued_requests` bounds them.
            batch: EmbeddingBatch = await handle.embed.remote(texts)
            return batch
        lane = self._lanes.get(id(handle))
        if lane is None:
            lane = self._lanes[id(handle)] = _Lane(
                handle, self._limits, functools.partial(self._max_in_flight, handle)
            )
        if lane.callers >= self._callers_per_call * lane.max_in_flight():
            raise CoalescerFull(f"{lane.callers} small requests already wait for this model")
        if lane.oldest_wait_s() > self._max_wait_s:
            raise CoalescerFull(f"small requests have waited {lane.oldest_wait_s():.1f} s")
        lane.callers += 1
        try:
            return await lane.submit(texts)
        finally:
            lane.callers -= 1


def calls_by_replicas(
    counts: RecentReplicaCounts, ingress_replicas: Callable[[], int]
) -> Callable[[Any], int]:
    """Calls out at once to a model's handle: this ingress replica's share of
    `CALLS_PER_MODEL_REPLICA` for each running replica of its deployment, as last read."""

    def max_in_flight(handle: Any) -> int:
        replicas = counts.running(handle.deployment_name)
        return replica_share(CALLS_PER_MODEL_REPLICA, replicas, ingress_replicas())

    return max_in_flight
