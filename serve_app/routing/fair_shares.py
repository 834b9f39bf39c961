"""Per-model admission at the ingress: at most a limit of calls out to a model, the rest wait in
its fair queue (serve_app.gateway.fair_queue) and leave by tenant share. The limit follows the
model's running replicas and the ingress replicas (`in_flight_limit`), so a model that scales up
gets more calls at once, and several ingress replicas together send what one would.

The model's own queue is FIFO across everyone; holding the excess here instead, where the
tenant is known, is what lets a tenant below its share overtake a tenant above it. A request
that leaves the queue before its turn (deadline, client gone) takes nothing with it; one refused
because the queue is full gets 429 `tenant_share` at once (or its model's fallback, see
serve_app.routing.fallback). A call's place is a `Slot`, held until its holder releases it: the
routes hold it until the response has been sent, so a stream keeps its place (its row in the
model's batch) until its last token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from serve_app.errors import RateLimited, retry_after_header
from serve_app.gateway.config import TenantsConfig
from serve_app.gateway.fair_queue import FairQueue, QueueFull
from serve_app.gateway.tenants import Tenants
from serve_app.routing.replica_counts import replica_share

TENANT_SHARE = "tenant_share"
RETRY_AFTER_S = 1.0


class ShareRefused(RateLimited):
    """The model is busy and this tenant is over its share of it."""

    reason = TENANT_SHARE  # the rejections metric's label, and the fallback's reason

    def __init__(self, tenant: str, model: str) -> None:
        super().__init__(
            f"The model '{model}' is busy and tenant '{tenant}' is over its share of it; "
            f"retry in {RETRY_AFTER_S:g} s.",
            code=TENANT_SHARE,
            headers=retry_after_header(RETRY_AFTER_S),
        )


class Slot:
    """One call's place among a model's calls out; `release` (once, then a no-op) passes it to
    the next waiter."""

    def __init__(self, gate: ModelGate) -> None:
        self._gate: ModelGate | None = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.leave()


def in_flight_limit(
    config: TenantsConfig,
    model_replicas: Callable[[], int | None],
    ingress_replicas: Callable[[], int],
) -> int:
    """Calls one ingress replica lets out to a model at once: `max_in_flight_per_model` when set
    (no count is read then), else its share of `max_in_flight_per_replica` for each running
    replica of the model."""
    if config.max_in_flight_per_model is not None:
        return config.max_in_flight_per_model
    return replica_share(config.max_in_flight_per_replica, model_replicas(), ingress_replicas())


class ModelGate:
    """One model's calls from this ingress replica; `max_in_flight()` is read at each entry
    and exit, so a new limit applies from the next. Use from one event loop."""

    def __init__(
        self, model: str, tenants: Tenants, max_in_flight: Callable[[], int], max_waiting: int
    ) -> None:
        self._model = model
        self._tenants = tenants
        self._max_in_flight = max_in_flight
        self._queue: FairQueue[asyncio.Future[None]] = FairQueue(max_waiting)
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def enter(self, tenant: str, cost: float) -> Slot:
        """A slot once this tenant's turn comes; ShareRefused (429) when it is refused."""
        share = self._tenants.share(tenant)
        if self.in_flight < self._max_in_flight() and not self._queue:
            self._queue.send_now(tenant, share, cost)
            self.in_flight += 1
            return Slot(self)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            ticket, pushed_out = self._queue.push(tenant, share, cost, turn)
        except QueueFull:
            raise ShareRefused(tenant, self._model) from None
        if pushed_out is not None and not pushed_out.item.done():
            pushed_out.item.set_exception(ShareRefused(pushed_out.tenant, self._model))
        self._fill()  # a limit that grew since the last exit lets waiters out now, by share
        try:
            await turn
        except asyncio.CancelledError:
            if not self._queue.remove(ticket) and _granted(turn):
                self.leave()  # the slot came just as the caller went away: pass it on
            raise
        return Slot(self)

    def leave(self) -> None:
        """A call out is done: the next waiters by share go out (through `Slot.release`)."""
        self.in_flight -= 1
        self._fill()

    def _fill(self) -> None:
        while self.in_flight < self._max_in_flight():
            turn = self._queue.pop()
            if turn is None:
                return
            if not turn.done():
                self.in_flight += 1
                turn.set_result(None)


def _granted(turn: asyncio.Future[None]) -> bool:
    return turn.done() and not turn.cancelled() and turn.exception() is None


class FairShares:
    """A gate per model, made on first use; what the routes run model calls through.
    `model_replicas(model)`: its running replicas, None while unknown; `ingress_replicas()`:
    how many ingress replicas share each model."""

    def __init__(
        self,
        tenants: Tenants,
        config: TenantsConfig,
        model_replicas: Callable[[str], int | None] = lambda model: None,
        ingress_replicas: Callable[[], int] = lambda: 1,
    ) -> None:
        self._tenants = tenants
        self._config = config
        self._model_replicas = model_replicas
        self._ingress_replicas = ingress_replicas
        self._gates: dict[str, ModelGate] = {}

    def gate(self, model: str) -> ModelGate:
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = ModelGate(
                model,
                self._tenants,
                lambda: self.limit(model),
                self._config.max_waiting_per_model,
            )
        return gate

    def limit(self, model: str) -> int:
        return in_flight_limit(
            self._config, lambda: self._model_replicas(model), self._ingress_replicas
        )

    async def enter(self, model: str, tenant: str, cost: float) -> Slot:
        return await self.gate(model).enter(tenant, cost)
