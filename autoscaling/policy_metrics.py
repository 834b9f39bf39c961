"""The policy's readings and standing as Ray metrics, for the dashboard.

The policy runs inside the Serve controller, so these are exported like
Serve's own (``ray_inference_autoscaler_*`` in Prometheus, tagged with
``deployment`` and ``application``) and sit next to Serve's
``ray_serve_autoscaling_desired_replicas`` in Grafana. Ray 2.60 has no place
for a custom policy's state in ``serve status``; this and the controller log
are where it shows.

A gauge keeps its last value, so a signal with nothing to say is exported as
0 rather than left at an old reading: ``signal_replicas`` 0 means "asks for
nothing", ``latency_ms`` counts only while ``latency_replicas`` > 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from autoscaling.decision import Decision

SIGNALS = ("queue", "latency", "throughput", "burst")
PREFIX = "inference_autoscaler_"
DECISIONS = PREFIX + "decisions_total"  # the one series that appears only after an event


class GaugeLike(Protocol):
    def set(self, value: float, tags: dict[str, str] = ...) -> object: ...


class CounterLike(Protocol):
    def inc(self, value: float = ..., tags: dict[str, str] = ...) -> object: ...


GaugeFactory = Callable[[str, str, tuple[str, ...]], GaugeLike]
CounterFactory = Callable[[str, str, tuple[str, ...]], CounterLike]

TAGS = ("deployment", "application")


def _ray_gauge(name: str, description: str, tag_keys: tuple[str, ...]) -> GaugeLike:
    from ray.util.metrics import Gauge

    return Gauge(name, description=description, tag_keys=tag_keys)


def _ray_counter(name: str, description: str, tag_keys: tuple[str, ...]) -> CounterLike:
    from ray.util.metrics import Counter

    return Counter(name, description=description, tag_keys=tag_keys)


class PolicyMetrics:
    """Sets a deployment's gauges from each decision; counts scale events."""

    def __init__(
        self, gauge: GaugeFactory = _ray_gauge, counter: CounterFactory = _ray_counter
    ) -> None:
        self._last_phase: dict[tuple[str, str], str] = {}
        self._signal = gauge(
            PREFIX + "signal_replicas",
            "Replicas each signal (queue, latency, throughput, burst) asks for; 0 = nothing.",
            (*TAGS, "signal"),
        )
        self._decided = gauge(
            PREFIX + "decided_replicas", "Replica count the policy returned.", TAGS
        )
        self._queue = gauge(PREFIX + "queue", "Ongoing + queued requests the policy read.", TAGS)
        self._latency = gauge(
            PREFIX + "latency_ms",
            "Replica latency at the target percentile, sample-weighted; 0 = no replica had "
            "enough requests in its window.",
            TAGS,
        )
        self._latency_replicas = gauge(
            PREFIX + "latency_replicas", "Replicas whose latency counted.", TAGS
        )
        self._throughput = gauge(
            PREFIX + "throughput_rps", "Requests/s the replicas reported, summed.", TAGS
        )
        self._phase = gauge(
            PREFIX + "phase",
            "1 for the policy's current phase (steady, upscale_delay, cooldown, ...), "
            "0 for phases it has left.",
            (*TAGS, "phase"),
        )
        self._decisions = counter(DECISIONS, "Scale decisions, by direction.", (*TAGS, "direction"))

    def record(self, deployment: str, application: str, decision: Decision) -> None:
        tags = {"deployment": deployment, "application": application}
        for signal in SIGNALS:
            self._signal.set(decision.needs.get(signal, 0), {**tags, "signal": signal})
        self._decided.set(decision.num_replicas, tags)
        self._queue.set(decision.queue or 0.0, tags)
        readings = decision.readings
        self._latency.set((readings.latency_ms if readings else None) or 0.0, tags)
        self._latency_replicas.set(readings.latency_replicas if readings else 0, tags)
        self._throughput.set((readings.throughput_rps if readings else None) or 0.0, tags)
        # Only the phase that changed is touched: the previous one goes to 0.
        last = self._last_phase.get((deployment, application))
        if last != decision.phase:
            if last is not None:
                self._phase.set(0.0, {**tags, "phase": last})
            self._phase.set(1.0, {**tags, "phase": decision.phase})
            self._last_phase[(deployment, application)] = decision.phase
        if decision.direction != "hold":
            self._decisions.inc(1.0, {**tags, "direction": decision.direction})
