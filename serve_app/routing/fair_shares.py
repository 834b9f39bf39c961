"""Per-model admission at the ingress: at most `max_in_flight` calls out to a model, the rest
wait in its fair queue (serve_app.gateway.fair_queue) and leave by tenant share.

The model's own queue is FIFO across everyone; holding the excess here instead, where the
tenant is known, is what lets a tenant below its share overtake a tenant above it. A request
that leaves the queue before its turn (deadline, client gone) takes nothing with it; one refused
because the queue is full gets 429 `tenant_share` at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serve_app.errors import RateLimited, retry_after_header
from serve_app.gateway.config import TenantsConfig
from serve_app.gateway.fair_queue import FairQueue, QueueFull
from serve_app.gateway.tenants import Tenants

T = TypeVar("T")
TENANT_SHARE = "tenant_share"
RETRY_AFTER_S = 1.0


def _share_refused(tenant: str, model: str) -> RateLimited:
    return RateLimited(
        f"The model '{model}' is busy and tenant '{tenant}' is over its share of it; "
        f"retry in {RETRY_AFTER_S:g} s.",
        code=TENANT_SHARE,
        headers=retry_after_header(RETRY_AFTER_S),
    )


class ModelGate:
    """One model's calls from this ingress replica. Use from one event loop."""

    def __init__(self, model: str, tenants: Tenants, max_in_flight: int, max_waiting: int) -> None:
        self._model = model
        self._tenants = tenants
        self._max_in_flight = max_in_flight
        self._queue: FairQueue[asyncio.Future[None]] = FairQueue(max_waiting)
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def run(self, tenant: str, cost: float, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` once this tenant's turn comes; 429 tenant_share when it is refused."""
        await self._enter(tenant, cost)
        try:
            return await call()
        finally:
            self._leave()

    async def _enter(self, tenant: str, cost: float) -> None:
        share = self._tenants.share(tenant)
        if self.in_flight < self._max_in_flight and not self._queue:
            self._queue.send_now(tenant, share, cost)
            self.in_flight += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            ticket, pushed_out = self._queue.push(tenant, share, cost, turn)
        except QueueFull:
            raise _share_refused(tenant, self._model) from None
        if pushed_out is not None and not pushed_out.item.done():
            pushed_out.item.set_exception(_share_refused(pushed_out.tenant, self._model))
        try:
            await turn
        except asyncio.CancelledError:
            if not self._queue.remove(ticket) and _granted(turn):
                self._leave()  # the slot came just as the caller went away: pass it on
            raise

    def _leave(self) -> None:
        self.in_flight -= 1
        while self.in_flight < self._max_in_flight:
            turn = self._queue.pop()
            if turn is None:
                return
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)


def _granted(turn: asyncio.Future[None]) -> bool:
    return turn.done() and not turn.cancelled() and turn.exception() is None


class FairShares:
    """A gate per model, made on first use; what the routes run model calls through."""

    def __init__(self, tenants: Tenants, config: TenantsConfig) -> None:
        self._tenants = tenants
        self._config = config
        self._gates: dict[str, ModelGate] = {}

    def gate(self, model: str) -> ModelGate:
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = ModelGate(
                model,
                self._tenants,
                self._config.max_in_flight_per_model,
                self._config.max_waiting_per_model,
            )
        return gate

    async def run(
        self, model: str, tenant: str, cost: float, call: Callable[[], Awaitable[T]]
    ) -> T:
        return await self.gate(model).run(tenant, cost, call)
