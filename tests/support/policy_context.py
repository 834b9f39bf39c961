"""A fake autoscaling context for the policy tests: replicas with readings, a clock, a state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autoscaling.params import PolicyParams
from autoscaling.replica_stats import (
    SAMPLE_COUNT_KEY,
    THROUGHPUT_KEY,
    latency_key,
    queue_wait_key,
)

NOW = 1_000.0


TARGET_MS = 200.0


class Point(NamedTuple):
    """Ray's ``TimeStampedValue``: the policy reads ``.timestamp`` and ``.value``."""

    timestamp: float
    value: float


@dataclass(frozen=True)
class Replica:
    """What one replica last reported through ``record_autoscaling_stats``."""

    p95_ms: float = 50.0
    samples: float = 100.0
    throughput_rps: float = 10.0
    age_s: float = 1.0  # how old the report is at NOW


@dataclass
class FakeContext:
    """The attributes of ``AutoscalingContext`` the policy reads."""

    current_num_replicas: int = 2
    target_num_replicas: int = 2
    total_num_requests: float = 8.0
    replicas: list[Replica] | None = field(default_factory=lambda: [Replica(), Replica()])
    capacity_adjusted_min_replicas: int = 1
    capacity_adjusted_max_replicas: int = 20
    policy_state: dict[str, Any] = field(default_factory=dict)
    current_time: float | None = NOW
    deployment_name: str = "model"

    @property
    def raw_metrics(self) -> dict[str, dict[str, list[Point]]] | None:
        if self.replicas is None:
            return None
        raw: dict[str, dict[str, list[Point]]] = {}
        for i, replica in enumerate(self.replicas):
            at = NOW - replica.age_s
            values = {
                latency_key(95): replica.p95_ms,
                queue_wait_key(95): replica.p95_ms / 2,
                SAMPLE_COUNT_KEY: replica.samples,
                THROUGHPUT_KEY: replica.throughput_rps,
            }
            for key, value in values.items():
                raw.setdefault(key, {})[f"replica-{i}"] = [Point(at - 5, 0.0), Point(at, value)]
        return raw


def params(**overrides: Any) -> PolicyParams:
    base: dict[str, Any] = {
        "latency_target_ms": TARGET_MS,
        "latency_percentile": 95,
        "target_queue_per_replica": 4.0,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        "cooldown_s": 0.0,
    }
    return PolicyParams(**{**base, **overrides})


def replicas(n: int, **fields: Any) -> list[Replica]:
    return [Replica(**fields) for _ in range(n)]
