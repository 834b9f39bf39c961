"""The replay's bookkeeping of replicas, without Ray: lives, counts per second, replica-seconds,
and when a real figure is flagged as apart from its prediction."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from autoscaling.simulator.simulation import SimResult
from benchmarks.autoscaling_replay import (
    Comparison,
    RealRun,
    ReplicaLife,
    ReplicaWatch,
    relative_gap,
    replay_setup,
    replay_traces,
)
from benchmarks.loadgen import dispatch_on_schedule


def watch() -> ReplicaWatch:
    """Two replicas from the start; a third created at 10 s, running at 13 s, gone at 20 s;
    the target went 2 -> 3 at 10 s and back to 2 at 18 s."""
    lives = {
        "a": ReplicaLife(created_s=-1.0, running_s=-0.5, last_seen_s=30.0),
        "b": ReplicaLife(created_s=-1.0, running_s=-0.5, last_seen_s=30.0),
        "c": ReplicaLife(created_s=10.0, running_s=13.0, last_seen_s=20.0),
    }
    targets = [(0.0, 2), (5.0, 2), (10.0, 3), (15.0, 3), (18.0, 2), (25.0, 2)]
    return ReplicaWatch(lives=lives, targets=targets)


def test_replica_seconds_count_each_life_inside_the_window() -> None:
    assert watch().replica_seconds(0.0, 30.0) == pytest.approx(30 + 30 + 10)
    assert watch().replica_seconds(12.0, 14.0) == pytest.approx(2 + 2 + 2)


def test_startup_delays_are_creation_to_running_of_replicas_added_during_the_run() -> None:
    assert watch().startup_delays_s(after_s=0.0) == [3.0]


def test_per_second_counts_follow_the_controller() -> None:
    targets, running = watch().per_second(0.0, 20)
    assert targets[:10] == [2] * 10
    assert targets[10:18] == [3] * 8
    assert targets[18:] == [2] * 2
    assert running[12] == 2
    assert running[13] == 3
    assert running[19] == 3


def test_scale_events_count_changes_of_the_target() -> None:
    assert watch().scale_events(0.0, 30.0) == 2
    assert watch().scale_events(0.0, 12.0) == 1


def test_relative_gap() -> None:
    assert relative_gap(110.0, 100.0) == pytest.approx(0.1)
    assert relative_gap(0.0, 0.0) == 0.0
    assert math.isinf(relative_gap(1.0, 0.0))


def result(latency_s: list[float], replica_seconds: float) -> SimResult:
    count = len(latency_s)
    return SimResult(
        arrival_s=np.linspace(0.0, 1.0, count),
        latency_s=np.asarray(latency_s),
        timeline_s=np.arange(2, dtype=np.float64),
        offered_rps=np.zeros(2),
        target_replicas=np.asarray([2, 3]),
        running_replicas=np.asarray([2, 3]),
        replica_seconds=replica_seconds,
        scale_events=1,
        decisions=[],
    )


def test_a_comparison_flags_only_figures_more_than_ten_percent_apart() -> None:
    setup = replay_setup()
    trace = replay_traces(setup)[0]
    real = RealRun(result([0.1] * 99 + [math.inf], 100.0), [4.0, 6.0], 1, 0.0)
    close = Comparison.of(trace, "ours", real, result([0.1] * 100, 95.0), setup)
    assert close.flagged == ["p99"]  # a failure is an infinite latency; 99% within stays close
    assert close.failed == 1
    assert close.startup_delay_s == 5.0
    assert close.real.peak_replicas == 3
    far = Comparison.of(trace, "ours", real, result([0.1] * 100, 60.0), setup)
    assert far.flagged == ["p99", "replica-seconds"]


def test_the_replayed_traces_are_the_simulators_spike_and_on_off_scaled_down() -> None:
    setup = replay_setup(base_rps=20.0, duration_s=90.0)
    spike, on_off = replay_traces(setup)
    assert (spike.name, on_off.name) == ("spike", "on_off")
    rates = spike.rate_rps(np.asarray([10.0, 45.0, 80.0]))
    assert rates.tolist() == [20.0, 100.0, 20.0]
    assert on_off.rate_rps(np.asarray([10.0, 30.0, 50.0])).tolist() == [60.0, 0.0, 60.0]


def test_dispatch_starts_every_send_on_time_without_waiting_for_answers() -> None:
    started: list[tuple[int, float]] = []

    async def send(index: int, due_s: float) -> None:
        started.append((index, time.perf_counter() - due_s))
        await asyncio.sleep(1.0)  # far slower than the gaps: waiting would start them late

    async def run() -> float:
        return await dispatch_on_schedule([0.0, 0.01, 0.02, 0.03], time.perf_counter(), send, 5.0)

    lag_s = asyncio.run(run())
    assert [index for index, _ in started] == [0, 1, 2, 3]
    assert all(late < 0.5 for _, late in started)
    assert lag_s < 0.5
