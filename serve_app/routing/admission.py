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
queue (measured at 5x capacity: admitted p99 at 1.5x the objective; with the 10th percentile of
all latencies standing in for a model that had never seen a lone call, it climbed from 0.14 to
5.4 s over four runs at 5x). A model's first call always goes alone, so one is measured from the
start. And a request that finds no call out is always admitted: the model is idle, and its
answer measures the service time afresh. Refusing it (a service time measured once, late, above
the limit) refused everything from then on, since nothing was left to measure.

Both figures outlive the window: after a quiet spell the last ones stand until the new traffic
has measured its own. Before seconds per place have been measured at all (a model's first
burst), the first `FREE_PLACES` places ahead are free, so that queued calls get measured, and
each place beyond costs a whole service time, as if the model took one call at a time. Charging
nothing instead admitted a first burst at 5x capacity whole: 90 requests in its first second,
answered in up to 3.6 s against a 2 s objective, then none for two seconds while they drained
(goodput 0.71 of capacity); a burst after 12 s of quiet did the same while the figures lived
only as long as the window.

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

# Calls of the last 10 s, a percentile judged from 5 on (the fallback trigger, seconds per place).
WINDOW_S = 10.0
MIN_SAMPLES = 5
# The prediction is a median, the objective a high percentile: admit only below this share of
# it, so the admitted requests' spread stays within the objective.
ADMIT_FRACTION = 0.8
# Before seconds per place are measured: places ahead charged nothing, enough for MIN_SAMPLES
# queued calls to be measured whatever the model's speed.
FREE_PLACES = 2 * MIN_SAMPLES


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
    None without a service time. Without seconds per place (none measured yet), the places
    beyond `FREE_PLACES` cost a service time each."""
    if service_s is None or not math.isfinite(service_s):
        return None
    if seconds_per_place is None:
        queue_s = max(0, ahead - FREE_PLACES) * service_s
    elif math.isfinite(seconds_per_place):
        queue_s = ahead * seconds_per_place
    else:
        return None
    latency_s = max(0.0, waited_s) + service_s + queue_s
    return Prediction(latency_s, ADMIT_FRACTION * objective_ms / 1000)


class KeptMedian:
    """The median of the window's samples, judged from `min_samples` on; while the window holds
    fewer (a quiet spell), the last such median, taken at each sample and each read."""

    def __init__(self, min_samples: int) -> None:
        self._window = ReplicaStats(WINDOW_S, max_samples=512)
        self._min_samples = min_samples
        self._last: float | None = None

    def observe(self, value: float, now: float) -> None:
        self._window.observe(value, 0.0, now)
        self.median(now)

    def median(self, now: float) -> float | None:
        """None until `min_samples` have been in the window at once."""
        median = self._window.latency_s(50, now, self._min_samples)
        if median is not None:
            self._last = median
        return self._last


class ModelLoad:
    """One model's calls through this ingress replica: how many are out, and how long they took
    (end to end, for the fallback trigger and the service time, and per place ahead)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.in_flight = 0
        self.latency = ReplicaStats(WINDOW_S, max_samples=512)
        # The service time: a model's first call always goes alone, so one sample is enough.
        self.unqueued = KeptMedian(min_samples=1)
        self.per_place = KeptMedian(MIN_SAMPLES)

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
                self.per_place.observe(max(0.0, latency_s - service_s) / ahead, now)
        else:
            self.unqueued.observe(latency_s, now)
        return result

    def service_s(self, now: float) -> float | None:
        """The median latency of recent calls that went alone; the last such median while
        every call queues; None before the first call has ended."""
        return self.unqueued.median(now)

    def seconds_per_place(self, now: float) -> float | None:
        """The median of the window; the last such median while the window holds too few; None
        until one has been measured."""
        return self.per_place.median(now)

    def latency_s(self, percentile: int) -> float | None:
        return self.latency.latency_s(percentile, self._clock(), MIN_SAMPLES)

    def predict(self, objective: LatencyObjective, waited_s: float = 0.0) -> Prediction | None:
        now = self._clock()
        service_s = self.service_s(now)
        seconds_per_place = self.seconds_per_place(now)
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
    admit it. A request that finds no call out is admitted whatever the prediction."""
    if objective is None or not objective.admission or load.in_flight == 0:
        return None
    prediction = load.predict(objective, waited_s)
    if prediction is None or not prediction.misses:
        return None
    return PredictedMiss(model, prediction, objective)
