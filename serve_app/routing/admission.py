"""Admission by predicted wait: refuse at once a request that the queue already makes late.

Each ingress replica keeps, per model, how many of its calls are out and three windows: the
calls' latencies (for the fallback trigger); the latencies of calls that found no other call out,
whose median is the *service time* (one pass plus the path to the replica); and *seconds per
place*, each finished call's latency beyond the service time divided by the calls that were out
ahead of it when it arrived. Under load that ratio is the model's time per request ahead,
whatever its replica count, batch size or parallel passes. A new request with `ahead` calls in
front of it is predicted to take `service + ahead * seconds_per_place`, after the time it has
already spent in this ingress (reading, checks, a tenant's turn): under overload that wait grows
too, and leaving it out let admitted requests end past the limit (measured at 5x: their median at
1.73-1.81 s against a 1.6 s limit).

The service time comes only from calls that did not queue, and the last one measured is kept
while every call queues: under sustained overload a percentile of all latencies is itself a
queue, and subtracting it shrank seconds per place, which admitted more, which lengthened the
queue (measured at 5x capacity: admitted p99 at 1.5x the objective). Until a call has gone
alone, the 10th percentile of all latencies stands in.

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
SERVICE_PERCENTILE = 10
# The prediction is a median, the objective a high percentile: admit only below this share of
# it, so the admitted requests' spread stays within the objective.
ADMIT_FRACTION = 0.8


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


def predict(
    ahead: int,
    service_s: float | None,
    seconds_per_place: float | None,
    objective_ms: float,
    waited_s: float = 0.0,
) -> Prediction | None:
    """A new request's latency with `ahead` calls in front of it, `waited_s` after it arrived;
    None without a service time (no seconds per place yet: only queues of one call have been
    seen, so none is charged)."""
    if service_s is None or not math.isfinite(service_s):
        return None
    per_place_s = seconds_per_place if seconds_per_place is not None else 0.0
    if not math.isfinite(per_place_s):
        return None
    latency_s = max(0.0, waited_s) + service_s + ahead * per_place_s
    return Prediction(latency_s, ADMIT_FRACTION * objective_ms / 1000)


class ModelLoad:
    """One model's calls through this ingress replica: how many are out, and how long they took
    (end to end, for the fallback trigger and the service time, and per place ahead)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.in_flight = 0
        self.latency = ReplicaStats(WINDOW_S, max_samples=512)
        self.unqueued = ReplicaStats(WINDOW_S, max_samples=512)
        self.per_place = ReplicaStats(WINDOW_S, max_samples=512)
        self._last_service_s: float | None = None

    async def timed(self, call: Awaitable[T], per_place: bool = True) -> T:
        """`call`, counted and timed. `per_place`: also keep its seconds per place ahead (a
        percentile over the window per call: only for a model that admits by predicted wait)."""
        ahead = self.in_flight
        self.in_flight += 1
        started_s = self._clock()
        try:
            result = await call
        finally:
            self.in_flight -= 1
        now = self._clock()
        latency_s = now - started_s
        self.latency.observe(latency_s, 0.0, now)
        if not per_place:
            return result
        if ahead:
            service_s = self.service_s(now)
            if service_s is not None:
                self.per_place.observe(max(0.0, latency_s - service_s) / ahead, 0.0, now)
        else:
            self.unqueued.observe(latency_s, 0.0, now)
        return result

    def service_s(self, now: float) -> float | None:
        """The median latency of recent calls that went alone; the last such median while
        every call queues; the 10th percentile of all calls until one has gone alone."""
        alone_s = self.unqueued.latency_s(50, now, MIN_SAMPLES)
        if alone_s is not None:
            self._last_service_s = alone_s
        if self._last_service_s is not None:
            return self._last_service_s
        return self.latency.latency_s(SERVICE_PERCENTILE, now, MIN_SAMPLES)

    def latency_s(self, percentile: int) -> float | None:
        return self.latency.latency_s(percentile, self._clock(), MIN_SAMPLES)

    def predict(self, objective: LatencyObjective, waited_s: float = 0.0) -> Prediction | None:
        now = self._clock()
        service_s = self.service_s(now)
        seconds_per_place = self.per_place.latency_s(50, now, MIN_SAMPLES)
        return predict(self.in_flight, service_s, seconds_per_place, objective.latency_ms, waited_s)


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
    model: str, load: ModelLoad, objective: LatencyObjective | None, waited_s: float = 0.0
) -> PredictedMiss | None:
    """Why `model` should not take a new request now (`waited_s` after it arrived), or None to
    admit it."""
    if objective is None or not objective.admission:
        return None
    prediction = load.predict(objective, waited_s)
    if prediction is None or not prediction.misses:
        return None
    return PredictedMiss(model, prediction, objective)
