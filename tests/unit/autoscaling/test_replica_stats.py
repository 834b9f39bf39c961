"""The replicas' sliding-window recorder, on a fake clock."""

from __future__ import annotations

import math

import pytest

from autoscaling.replica_stats import (
    LAST_SAMPLE_AGE_KEY,
    PERCENTILES,
    SAMPLE_COUNT_KEY,
    THROUGHPUT_KEY,
    ReplicaStats,
    latency_key,
    percentile,
    queue_wait_key,
)


def filled(latencies_ms: list[float], at: float = 100.0, window_s: float = 10.0) -> ReplicaStats:
    stats = ReplicaStats(window_s=window_s)
    stats.snapshot(at - window_s)  # the recorder has lived a whole window
    for latency_ms in latencies_ms:
        stats.observe(latency_ms / 1e3, latency_ms / 2e3, at)
    return stats


@pytest.mark.parametrize(
    ("q", "expected"),
    [(50, 50.0), (90, 90.0), (95, 95.0), (99, 99.0), (100, 100.0), (0, 1.0)],
)
def test_nearest_rank_percentile(q: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], q) == expected


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 99) == 0.0


def test_snapshot_reports_every_percentile_in_ms() -> None:
    snapshot = filled([float(v) for v in range(1, 101)]).snapshot(100.0)
    for q in PERCENTILES:
        assert snapshot[latency_key(q)] == pytest.approx(float(q))
        assert snapshot[queue_wait_key(q)] == pytest.approx(q / 2)
    assert snapshot[SAMPLE_COUNT_KEY] == 100.0
    assert snapshot[THROUGHPUT_KEY] == pytest.approx(10.0)  # 100 requests / 10 s window
    assert snapshot[LAST_SAMPLE_AGE_KEY] == 0.0


def test_every_value_is_a_float_for_rays_type_check() -> None:
    snapshot = filled([5.0]).snapshot(101.0)
    assert all(type(value) is float for value in snapshot.values())


def test_samples_leave_the_window() -> None:
    stats = ReplicaStats(window_s=10.0)
    stats.observe(1.0, 0.5, now=0.0)  # slow, early
    stats.observe(0.01, 0.0, now=8.0)
    snapshot = stats.snapshot(now=12.0)
    assert snapshot[SAMPLE_COUNT_KEY] == 1.0
    assert snapshot[latency_key(99)] == pytest.approx(10.0)


def test_an_idle_window_says_no_data_not_fast() -> None:
    stats = ReplicaStats(window_s=5.0)
    stats.observe(0.2, 0.1, now=0.0)
    snapshot = stats.snapshot(now=60.0)
    assert snapshot[SAMPLE_COUNT_KEY] == 0.0
    assert snapshot[latency_key(95)] == 0.0
    assert snapshot[THROUGHPUT_KEY] == 0.0
    assert snapshot[LAST_SAMPLE_AGE_KEY] == pytest.approx(60.0)


def test_a_fresh_recorder_has_no_samples_and_ages_from_first_use() -> None:
    stats = ReplicaStats()
    assert stats.snapshot(now=3.0)[LAST_SAMPLE_AGE_KEY] == 0.0
    assert stats.snapshot(now=5.0)[LAST_SAMPLE_AGE_KEY] == pytest.approx(2.0)


def test_young_replica_throughput_uses_its_age_not_the_window() -> None:
    stats = ReplicaStats(window_s=10.0)
    stats.snapshot(now=0.0)
    for i in range(20):
        stats.observe(0.01, 0.0, now=i * 0.1)
    assert stats.snapshot(now=2.0)[THROUGHPUT_KEY] == pytest.approx(10.0)


def test_broken_measurements_are_dropped_or_clipped() -> None:
    stats = ReplicaStats()
    stats.observe(math.nan, 0.0, now=1.0)
    stats.observe(0.1, math.inf, now=1.0)
    stats.observe(-0.5, -0.1, now=1.0)  # clock skew: clipped to zero
    snapshot = stats.snapshot(now=1.0)
    assert snapshot[SAMPLE_COUNT_KEY] == 1.0
    assert snapshot[latency_key(50)] == 0.0


def test_observe_batch_splits_wait_and_service() -> None:
    stats = ReplicaStats()
    stats.observe_batch([0.0, 0.05], started_at=0.1, finished_at=0.3)
    snapshot = stats.snapshot(now=0.3)
    assert snapshot[SAMPLE_COUNT_KEY] == 2.0
    assert snapshot[latency_key(99)] == pytest.approx(300.0)
    assert snapshot[queue_wait_key(99)] == pytest.approx(100.0)
    assert snapshot[queue_wait_key(50)] == pytest.approx(50.0)


def test_memory_is_bounded_and_throughput_uses_the_kept_span() -> None:
    stats = ReplicaStats(window_s=100.0, max_samples=10)
    stats.snapshot(now=0.0)
    for i in range(50):
        stats.observe(0.01, 0.0, now=float(i))
    snapshot = stats.snapshot(now=49.0)
    assert snapshot[SAMPLE_COUNT_KEY] == 10.0
    assert snapshot[THROUGHPUT_KEY] == pytest.approx(10 / 9)


@pytest.mark.parametrize(("window_s", "max_samples"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_rejects_nonsense_configuration(window_s: float, max_samples: int) -> None:
    with pytest.raises(ValueError, match=r"window_s|max_samples"):
        ReplicaStats(window_s=window_s, max_samples=max_samples)
