"""Admission by predicted wait: refuse at once a request that the queue already makes late.

Each ingress replica keeps, per model, how many of its calls are out and a window of
"seconds per place": a finished call's latency divided by the calls out when it arrived (itself
included). Under load that ratio is the time the model takes per request ahead, whatever its
replica count, batch size or parallel passes; alone it is the time of one pass (an over-estimate
for a batching model, which only makes the first requests of a burst cautious). A new request
with `ahead` calls in front of it is predicted to take `(ahead + 1) * seconds_per_place`.

Only calls through this ingress replica are counted; with several ingress replicas each sees its
share of both the calls and the drain, so the ratio still holds.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from autoscaling.replica_stats import ReplicaStats
from serve_app.config import LatencyObjective
from serve_app.errors import Overloaded

T = TypeVar("T")

# Calls of the last 10 s, judged from 5 on (fewer: nothing is predicted, everything admitted).
WINDOW_S = 10.0
MIN_SAMPLES = 5
# The prediction is a median, the objective a high percentile: admit only below this share of
# it, so the admitted requests' spread stays within the objective.
ADMIT_FRACTION = 0.7


@dataclass(frozen=True)
class Prediction:
    latency_s: float
    limit_s: float

    @property
    def misses(self) -> bool:
        return self.latency_s > self.limit_s

    def retry_after_s(self) -> float:
        """About when the queue in front will have drained below the limit."""
        return max(1.0, self.latency_s - self.limit_s)


def predict(ahead: int, seconds_per_place: float | None, objective_ms: float) -> Prediction | None:
    """A new request's latency with `ahead` calls in front of it; None without a measurement."""
    if seconds_per_place is None or not math.isfinite(seconds_per_place):
        return None
    return Prediction((ahead + 1) * seconds_per_place, ADMIT_FRACTION * objective_ms / 1000)


class ModelLoad:
    """One model's calls through this ingress replica: how many are out, and how long they took
    (end to end, for the fallback trigger, and per place ahead, for admission)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.in_flight = 0
        self.latency = ReplicaStats(WINDOW_S, max_samples=512)
        self.per_place = ReplicaStats(WINDOW_S, max_samples=512)

    async def timed(self, call: Awaitable[T]) -> T:
        self.in_flight += 1
        places = self.in_flight
        started_s = self._clock()
        try:
            result = await call
        finally:
            self.in_flight -= 1
        now = self._clock()
        self.latency.observe(now - started_s, 0.0, now)
        self.per_place.observe((now - started_s) / places, 0.0, now)
        return result

    def latency_s(self, percentile: int) -> float | None:
        return self.latency.latency_s(percentile, self._clock(), MIN_SAMPLES)

    def predict(self, objective: LatencyObjective) -> Prediction | None:
        seconds_per_place = self.per_place.latency_s(50, self._clock(), MIN_SAMPLES)
        return predict(self.in_flight, seconds_per_place, objective.latency_ms)


class PredictedMiss(Overloaded):
    """The model's queue at this ingress already makes a new request miss its objective."""

    reason = "predicted_miss"

    def __init__(self, model: str, prediction: Prediction, objective: LatencyObjective) -> None:
        super().__init__(
            f"The model '{model}' would answer in about {prediction.latency_s * 1000:.0f} ms, "
            f"past its objective of {objective.latency_ms:g} ms; retry later.",
            retry_after_s=prediction.retry_after_s(),
        )


def refusal(
    model: str, load: ModelLoad, objective: LatencyObjective | None
) -> PredictedMiss | None:
    """Why `model` should not take a new request now, or None to admit it."""
    if objective is None or not objective.admission:
        return None
    prediction = load.predict(objective)
    if prediction is None or not prediction.misses:
        return None
    return PredictedMiss(model, prediction, objective)
