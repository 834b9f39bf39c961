"""How long a batched replica takes, and how much load one replica sustains.

``t(batch) = a + b * batch`` is one forward pass. ``a`` and ``b`` defaults
come from ``python -m autoscaling.simulator.calibrate`` (all-MiniLM-L6-v2, one CPU
thread, ~20-token inputs, median of 15 passes per batch size 1..32, least
squares; R^2 = 0.998): see docs/autoscaling.md.

Batches form the way ``@serve.batch`` forms them: a batch opens with the first
request that finds no open batch, collects arrivals for
``batch_wait_timeout_s`` or until ``max_batch_size``, then waits its turn for
the accelerator (one batch at a time). Formation does not wait for the
accelerator, so a backlog does not make batches bigger: at ``rate`` requests
per second a batch holds about ``1 + rate * batch_wait_timeout_s`` requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CALIBRATED_A_S = 0.0038
CALIBRATED_B_S = 0.0054


@dataclass(frozen=True)
class ServiceModel:
    """One replica's batched service time and batching knobs."""

    a_s: float = CALIBRATED_A_S
    b_s: float = CALIBRATED_B_S
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01

    def __post_init__(self) -> None:
        if self.a_s < 0 or self.b_s <= 0:
            raise ValueError(f"need a_s >= 0 and b_s > 0, got a={self.a_s}, b={self.b_s}")
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("need max_batch_size >= 1 and batch_wait_timeout_s >= 0")

    def service_time_s(self, batch_size: int) -> float:
        return self.a_s + self.b_s * batch_size

    def batch_size_at(self, rate_rps: float) -> float:
        """Mean batch size ``@serve.batch`` forms at ``rate_rps`` per replica."""
        return min(float(self.max_batch_size), 1.0 + rate_rps * self.batch_wait_timeout_s)

    def utilization_at(self, rate_rps: float) -> float:
        """Fraction of time the accelerator is busy at ``rate_rps`` per replica."""
        batch = self.batch_size_at(rate_rps)
        return rate_rps / batch * (self.a_s + self.b_s * batch)

    def max_rate_rps(self) -> float:
        """The per-replica rate at which the accelerator is busy all the time."""
        low, high = 0.0, 1.0
        while self.utilization_at(high) < 1.0:
            high *= 2.0
        for _ in range(60):  # bisection; utilization rises with rate
            mid = (low + high) / 2.0
            low, high = (mid, high) if self.utilization_at(mid) < 1.0 else (low, mid)
        return low

    def in_flight_at(self, rate_rps: float) -> float:
        """Requests one replica holds at ``rate_rps`` (Little's law, rough latency).

        Latency is the batch wait, one pass, and the M/D/1 wait for the
        accelerator: enough to size a queue target, not to predict a tail.
        """
        utilization = self.utilization_at(rate_rps)
        if utilization >= 1.0:
            return math.inf
        service_s = self.service_time_s(round(self.batch_size_at(rate_rps)))
        wait_s = utilization / (2.0 * (1.0 - utilization)) * service_s
        return rate_rps * (self.batch_wait_timeout_s + service_s + wait_s)

    def suggested_queue_target(self, utilization: float = 0.7) -> float:
        """``target_queue_per_replica`` that keeps replicas near ``utilization``."""
        return self.in_flight_at(utilization * self.max_rate_rps())

    def replicas_for(self, rate_rps: float, utilization: float = 1.0) -> int:
        """Fewest replicas that keep each below ``utilization`` at ``rate_rps`` total."""
        if rate_rps <= 0:
            return 0
        return math.ceil(rate_rps / (utilization * self.max_rate_rps()))
