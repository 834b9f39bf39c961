"""Degradation before rejection: when a model is saturated, answer from its cheaper fallback.

A model entry may name a `fallback` (same task and output shape). Requests go to the fallback
when the primary's recent p95 latency at the ingress is past its `latency_target_ms`, or when
the primary refuses because its queue is full. Only when the fallback is full too does the
client get 503.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from autoscaling.replica_stats import ReplicaStats
from serve_app.errors import Overloaded
from serve_app.routing.registry import ServedModel

T = TypeVar("T")

FALLBACK_HEADER = "x-fallback-from"
# A model's recent latency at the ingress: calls of the last 10 s, judged from 5 on.
LATENCY_WINDOW_S = 10.0
MIN_SAMPLES = 5


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
        self._windows: dict[str, ReplicaStats] = {}

    def _window(self, name: str) -> ReplicaStats:
        window = self._windows.get(name)
        if window is None:
            window = self._windows[name] = ReplicaStats(LATENCY_WINDOW_S, max_samples=512)
        return window

    def _too_slow(self, model: ServedModel) -> bool:
        target_ms = model.spec.latency_target_ms
        if target_ms is None:
            return False
        p95_s = self._window(model.name).latency_s(95, self._clock(), MIN_SAMPLES)
        return p95_s is not None and p95_s * 1000 > target_ms

    async def _timed(self, model: ServedModel, call: Callable[[ServedModel], Awaitable[T]]) -> T:
        started_s = self._clock()
        result = await call(model)
        self._window(model.name).observe(self._clock() - started_s, 0.0, self._clock())
        return result

    async def call(
        self, primary: ServedModel, call: Callable[[ServedModel], Awaitable[T]]
    ) -> tuple[T, Routed]:
        fallback = self._models.get(primary.spec.fallback) if primary.spec.fallback else None
        if fallback is None:
            return await self._timed(primary, call), Routed(primary)
        if self._too_slow(primary):
            return await self._degrade(primary, fallback, call, "latency")
        try:
            return await self._timed(primary, call), Routed(primary)
        except Overloaded:
            return await self._degrade(primary, fallback, call, "queue_full")

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
