"""Reading the policy's two signals out of an autoscaling context.

Everything that can be missing is: a context without custom metrics, a
replica that has not reported yet, a report older than the freshness limit, a
window with too few requests, NaN. Each case yields ``None`` for that part of
the signal, never an exception and never a made-up value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autoscaling.params import PolicyParams
from autoscaling.replica_stats import (
    SAMPLE_COUNT_KEY,
    THROUGHPUT_KEY,
    latency_key,
    queue_wait_key,
)


class TimestampedValue(Protocol):
    """One point of a Ray ``TimeSeries`` (``TimeStampedValue``)."""

    @property
    def timestamp(self) -> float: ...

    @property
    def value(self) -> float: ...


RawMetrics = Mapping[str, Mapping[Any, Sequence[TimestampedValue]]]


class PolicyContext(Protocol):
    """The part of ``ray.serve.config.AutoscalingContext`` the policy reads."""

    @property
    def current_num_replicas(self) -> int: ...

    @property
    def target_num_replicas(self) -> int: ...

    @property
    def capacity_adjusted_min_replicas(self) -> int: ...

    @property
    def capacity_adjusted_max_replicas(self) -> int: ...

    @property
    def policy_state(self) -> Mapping[str, Any]: ...

    @property
    def current_time(self) -> float | None: ...

    @property
    def total_num_requests(self) -> float: ...

    @property
    def raw_metrics(self) -> RawMetrics | None: ...


@dataclass(frozen=True)
class ReplicaReadings:
    """What the replicas' own reports say, each part None when nobody can say."""

    latency_ms: float | None  # at the configured percentile, sample-weighted mean
    queue_wait_ms: float | None
    throughput_rps: float | None  # summed over replicas with a fresh report
    latency_replicas: int  # replicas whose latency counted
    samples: int


def finite_or_none(value: object) -> float | None:
    """``value`` as a float if it is a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def read_queue(ctx: PolicyContext) -> float | None:
    """Ongoing + queued requests of the deployment, or None if unusable."""
    return finite_or_none(ctx.total_num_requests)


def latest_fresh(
    series: Sequence[TimestampedValue] | None, now: float, max_age_s: float
) -> float | None:
    """The newest point's value if it is recent and a usable number."""
    if not series:
        return None
    point = series[-1]
    age_s = now - point.timestamp
    if not math.isfinite(age_s) or age_s > max_age_s:
        return None
    return finite_or_none(point.value)


def read_replicas(ctx: PolicyContext, params: PolicyParams, now: float) -> ReplicaReadings:
    """Latency weighted by sample count over replicas with a big enough fresh
    window; throughput summed over every replica with a fresh report."""
    raw = ctx.raw_metrics or {}
    counts = raw.get(SAMPLE_COUNT_KEY, {})
    latencies = raw.get(latency_key(params.latency_percentile), {})
    waits = raw.get(queue_wait_key(params.latency_percentile), {})
    max_age_s = params.metrics_max_age_s

    throughput: float | None = None
    for series in raw.get(THROUGHPUT_KEY, {}).values():
        rate = latest_fresh(series, now, max_age_s)
        if rate is not None:
            throughput = (throughput or 0.0) + rate

    weighted_latency = latency_weight = weighted_wait = wait_weight = 0.0
    replicas = samples = 0
    for replica, count_series in counts.items():
        count = latest_fresh(count_series, now, max_age_s)
        latency = latest_fresh(latencies.get(replica), now, max_age_s)
        if count is None or count < params.min_latency_samples or latency is None:
            continue  # just started, idle, stale or broken: no say in latency
        replicas += 1
        samples += int(count)
        weighted_latency += latency * count
        latency_weight += count
        wait = latest_fresh(waits.get(replica), now, max_age_s)
        if wait is not None:
            weighted_wait += wait * count
            wait_weight += count
    return ReplicaReadings(
        latency_ms=weighted_latency / latency_weight if latency_weight else None,
        queue_wait_ms=weighted_wait / wait_weight if wait_weight else None,
        throughput_rps=throughput,
        latency_replicas=replicas,
        samples=samples,
    )
