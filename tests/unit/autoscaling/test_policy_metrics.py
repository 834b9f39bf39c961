"""The policy's gauges: what each decision sets, with fakes for Ray's metric classes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autoscaling.params import PolicyParams
from autoscaling.policy import QueueLatencyPolicy, decide
from autoscaling.policy_metrics import PREFIX, PolicyMetrics
from tests.support.policy_context import FakeContext, params, replicas

Tags = tuple[tuple[str, str], ...]


@dataclass
class FakeMetric:
    name: str
    values: dict[Tags, float] = field(default_factory=dict)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values[tuple(sorted((tags or {}).items()))] = value

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        key = tuple(sorted((tags or {}).items()))
        self.values[key] = self.values.get(key, 0.0) + value


class Registry:
    def __init__(self) -> None:
        self.metrics: dict[str, FakeMetric] = {}

    def make(self, name: str, description: str, tag_keys: tuple[str, ...]) -> FakeMetric:
        assert description
        assert "deployment" in tag_keys
        self.metrics[name] = FakeMetric(name)
        return self.metrics[name]

    def value(self, name: str, **tags: str) -> float:
        base = {"deployment": "model", "application": "app"}
        return self.metrics[PREFIX + name].values[tuple(sorted({**base, **tags}.items()))]


def recorder() -> tuple[Registry, PolicyMetrics]:
    """Policy metrics writing into a fresh fake registry."""
    registry = Registry()
    return registry, PolicyMetrics(gauge=registry.make, counter=registry.make)


def record(sink: PolicyMetrics, ctx: FakeContext, p: PolicyParams) -> None:
    sink.record("model", "app", decide(ctx, p))


def test_a_decision_sets_every_signal_reading_and_the_phase() -> None:
    registry, sink = recorder()
    ctx = FakeContext(total_num_requests=4.0, replicas=replicas(2, p95_ms=320.0))
    record(sink, ctx, params(replica_capacity_rps=50.0))
    assert registry.value("signal_replicas", signal="latency") == 4
    assert registry.value("signal_replicas", signal="queue") == 1
    assert registry.value("signal_replicas", signal="throughput") == 1  # 20 rps / 35
    assert registry.value("signal_replicas", signal="burst") == 0  # off: asks for nothing
    assert registry.value("decided_replicas") == 4
    assert registry.value("queue") == 4.0
    assert registry.value("latency_ms") == pytest.approx(320.0)
    assert registry.value("latency_replicas") == 2
    assert registry.value("throughput_rps") == pytest.approx(20.0)
    assert registry.value("phase", phase="scaling_up") == 1.0
    assert registry.value("decisions_total", direction="up") == 1.0


def test_the_phase_left_goes_to_zero_and_holds_are_not_counted() -> None:
    registry, sink = recorder()
    slow = FakeContext(total_num_requests=4.0, replicas=replicas(2, p95_ms=320.0))
    record(sink, slow, params(upscale_delay_s=5.0))
    assert registry.value("phase", phase="upscale_delay") == 1.0
    record(sink, FakeContext(total_num_requests=8.0), params())
    assert registry.value("phase", phase="upscale_delay") == 0.0
    assert registry.value("phase", phase="steady") == 1.0
    assert registry.metrics[PREFIX + "decisions_total"].values == {}


def test_missing_readings_are_exported_as_zero_not_left_stale() -> None:
    registry, sink = recorder()
    record(sink, FakeContext(replicas=replicas(2, p95_ms=320.0)), params())
    assert registry.value("latency_ms") > 0
    record(sink, FakeContext(replicas=None), params())
    assert registry.value("latency_ms") == 0.0
    assert registry.value("latency_replicas") == 0
    assert registry.value("signal_replicas", signal="latency") == 0


def test_outside_ray_the_policy_exports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulator runs the policy without Ray (a whole test session may have Ray up).
    monkeypatch.setattr("autoscaling.policy.ray.is_initialized", lambda: False)
    policy = QueueLatencyPolicy(**params().model_dump())
    policy(FakeContext())
    assert policy._metrics is None
