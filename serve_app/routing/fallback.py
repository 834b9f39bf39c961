"""Degradation before rejection: when a model is saturated, answer from its cheaper fallback.

A model entry may name a `fallback` (same task and output shape). Requests go to the fallback
when the primary's recent latency at the ingress is past its trigger (`latency_target_ms`, else
its `slo`), when admission predicts the primary would miss its objective, when the primary
refuses because its queue is full, or when the caller's tenant is over its share of the primary.
Only when the fallback refuses too does the client get the fallback's refusal (503, or 429
`tenant_share`). Without a fallback, a predicted miss is refused at once (503 + Retry-After).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from serve_app.errors import Overloaded
from serve_app.routing.admission import ModelLoad, refusal
from serve_app.routing.fair_shares import ShareRefused
from serve_app.routing.registry import ServedModel

T = TypeVar("T")

FALLBACK_HEADER = "x-fallback-from"


@dataclass(frozen=True)
class Routed:
    """Which model answered, and why not the requested one (None when it did)."""

    model: ServedModel
    fallback_reason: str | None = None


class FallbackRouter:
    def __init__(
        self,
        models_by_name: dict[str, ServedModel],
        on_fallback: Callable[[str, str, str], None] = lambda model, fallback, reason: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = models_by_name
        self._on_fallback = on_fallback
        self._clock = clock
        self._loads: dict[str, ModelLoad] = {}

    def load(self, name: str) -> ModelLoad:
        load = self._loads.get(name)
        if load is None:
            load = self._loads[name] = ModelLoad(self._clock)
        return load

    def _too_slow(self, model: ServedModel) -> bool:
        trigger = model.spec.fallback_trigger()
        if trigger is None:
            return False
        latency_s = self.load(model.name).latency_s(trigger.percentile)
        return latency_s is not None and latency_s * 1000 > trigger.target_ms

    async def _timed(self, model: ServedModel, call: Callable[[ServedModel], Awaitable[T]]) -> T:
        slo = model.spec.slo
        admits = slo is not None and slo.admission
        return await self.load(model.name).timed(call(model), per_place=admits)

    async def call(
        self,
        primary: ServedModel,
        call: Callable[[ServedModel], Awaitable[T]],
        arrived_s: float | None = None,
    ) -> tuple[T, Routed]:
        """`call` on `primary` or its fallback; `arrived_s`: when the request reached the
        ingress (this router's clock), so admission counts the time it has already spent."""
        fallback = self._models.get(primary.spec.fallback) if primary.spec.fallback else None
        waited_s = 0.0 if arrived_s is None else self._clock() - arrived_s
        refused = refusal(primary.name, self.load(primary.name), primary.spec.slo, waited_s)
        if fallback is None:
            if refused is not None:
                raise refused
            return await self._timed(primary, call), Routed(primary)
        if refused is not None:
            return await self._degrade(primary, fallback, call, refused.reason)
        if self._too_slow(primary):
            return await self._degrade(primary, fallback, call, "latency")
        try:
            return await self._timed(primary, call), Routed(primary)
        except (Overloaded, ShareRefused) as busy:
            return await self._degrade(primary, fallback, call, busy.reason)

    async def _degrade(
        self,
        primary: ServedModel,
        fallback: ServedModel,
        call: Callable[[ServedModel], Awaitable[T]],
        reason: str,
    ) -> tuple[T, Routed]:
        self._on_fallback(primary.name, fallback.name, reason)
        result = await self._timed(fallback, call)
        return result, Routed(fallback, reason)
