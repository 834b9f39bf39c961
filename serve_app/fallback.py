"""Degradation before rejection: when a model is saturated, answer from its cheaper fallback.

A model entry may name a `fallback` (same task and output shape). Requests go to the fallback
when the primary's recent p95 latency at the ingress is past its `latency_target_ms`, or when
the primary refuses because its queue is full. Only when the fallback is full too does the
client get 503.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from serve_app.errors import Overloaded
from serve_app.registry import ServedModel

T = TypeVar("T")

FALLBACK_HEADER = "x-fallback-from"


class LatencyWindow:
    """Durations of a model's recent calls over `window_s`; old samples age out."""

    def __init__(self, window_s: float = 10.0, min_samples: int = 5) -> None:
        self.window_s = window_s
        self.min_samples = min_samples
        self._samples: deque[tuple[float, float]] = deque(maxlen=512)

    def add(self, duration_s: float, now_s: float) -> None:
        self._samples.append((now_s, duration_s))

    def p95_s(self, now_s: float) -> float | None:
        """None when there are too few recent samples to judge."""
        while self._samples and now_s - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        if len(self._samples) < self.min_samples:
            return None
        durations = sorted(duration for _, duration in self._samples)
        return durations[min(len(durations) - 1, int(0.95 * len(durations)))]


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
        self._windows: dict[str, LatencyWindow] = {}

    def _window(self, name: str) -> LatencyWindow:
        return self._windows.setdefault(name, LatencyWindow())

    def _too_slow(self, model: ServedModel) -> bool:
        target_ms = model.spec.latency_target_ms
        if target_ms is None:
            return False
        p95_s = self._window(model.name).p95_s(self._clock())
        return p95_s is not None and p95_s * 1000 > target_ms

    async def _timed(self, model: ServedModel, call: Callable[[ServedModel], Awaitable[T]]) -> T:
        started_s = self._clock()
        result = await call(model)
        self._window(model.name).add(self._clock() - started_s, self._clock())
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
