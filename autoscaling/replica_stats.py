"""Sliding-window latency statistics a model replica reports to the autoscaler.

Ray-free and clock-free: every call takes ``now`` (seconds, any monotonic
clock), so unit tests and the simulator drive it with a fake clock.

The contract for a model deployment is three lines::

    class Embeddings:
        def __init__(self) -> None:
            self._stats = ReplicaStats()

        @serve.batch(...)
        async def _batch(self, items: list[Timed[str]]) -> list[list[float]]:
            started_at = time.monotonic()
            outputs = self._model(...)
            self._stats.observe_batch(
                [i.enqueued_at for i in items], started_at, time.monotonic()
            )
            return outputs

        async def embed(self, text: str) -> list[float]:
            return await self._batch(Timed(text, time.monotonic()))

        def record_autoscaling_stats(self) -> dict[str, float]:
            return self._stats.snapshot(time.monotonic())

Ray Serve calls ``record_autoscaling_stats`` on each replica every
``min(metrics_interval_s, 0.2 * look_back_period_s)`` seconds and hands the
time series to the autoscaling policy as ``ctx.raw_metrics[key][replica_id]``.
``observe`` (one request) is the alternative to ``observe_batch`` for code
that times requests one by one.

Keys of ``snapshot`` (all floats, so Ray's type check accepts them):

- ``latency_p{50,90,95,99}_ms``: end-to-end replica latency, from the request
  entering the replica's batch queue to its result being ready;
- ``queue_wait_p{50,90,95,99}_ms``: batch-queue wait, from entering the queue
  to its batch starting on the accelerator;
- ``throughput_rps``: requests completed per second over the window;
- ``sample_count``: requests in the window. When it is 0 the percentiles are
  0.0 and mean "no data", never "fast": readers must check it;
- ``last_sample_age_s``: the window's age, seconds since the newest request
  completed (since the recorder's first use when none has), so a reader can
  tell a replica that went quiet from one that is busy.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Generic, TypeVar

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
SAMPLE_COUNT_KEY = "sample_count"
THROUGHPUT_KEY = "throughput_rps"
LAST_SAMPLE_AGE_KEY = "last_sample_age_s"

T = TypeVar("T")


def latency_key(percentile: int) -> str:
    """Snapshot key of the end-to-end replica latency at ``percentile``."""
    return f"latency_p{percentile}_ms"


def queue_wait_key(percentile: int) -> str:
    """Snapshot key of the batch-queue wait at ``percentile``."""
    return f"queue_wait_p{percentile}_ms"


@dataclass(frozen=True)
class Timed(Generic[T]):
    """A batch input stamped with the moment it entered the batch queue."""

    item: T
    enqueued_at: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending ``sorted_values`` (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class ReplicaStats:
    """Latency and queue-wait samples over the last ``window_s`` seconds.

    Memory is bounded by ``max_samples``: beyond it the oldest samples go first
    and throughput is computed over the span the kept samples cover.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 20_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.window_s = window_s
        # (completed_at, latency_s, queue_wait_s)
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=max_samples)
        self._first_seen_at: float | None = None
        self._last_completed_at: float | None = None
        # The replica's batch loop and Ray's stats call may run on different
        # threads (sync methods go to a thread pool).
        self._lock = threading.Lock()

    def observe(self, latency_s: float, queue_wait_s: float, now: float) -> None:
        """Record one request that completed at ``now``."""
        if not (math.isfinite(latency_s) and math.isfinite(queue_wait_s)):
            return  # a broken measurement must not poison the percentiles
        with self._lock:
            self._touch(now)
            self._samples.append((now, max(0.0, latency_s), max(0.0, queue_wait_s)))
            self._last_completed_at = now

    def observe_batch(
        self, enqueued_at: Sequence[float], started_at: float, finished_at: float
    ) -> None:
        """Record a batch: each request's wait ends at ``started_at``."""
        for entered in enqueued_at:
            self.observe(finished_at - entered, started_at - entered, finished_at)

    def latency_s(self, q: float, now: float, min_samples: int = 1) -> float | None:
        """End-to-end latency at percentile ``q`` over the window, in seconds; None with fewer
        than ``min_samples`` recent samples (too few to judge)."""
        with self._lock:
            self._prune(now)
            latencies = sorted(map(itemgetter(1), self._samples))
        if len(latencies) < min_samples:
            return None
        return percentile(latencies, q)

    def snapshot(self, now: float) -> dict[str, float]:
        """The metrics an autoscaling policy reads; see the module docstring."""
        with self._lock:
            first_seen_at = self._touch(now)
            self._prune(now)
            samples = list(self._samples)
            full = len(samples) == self._samples.maxlen
            last = self._last_completed_at
        latencies = sorted(map(itemgetter(1), samples))
        waits = sorted(map(itemgetter(2), samples))
        stats: dict[str, float] = {}
        for q in PERCENTILES:
            stats[latency_key(q)] = 1e3 * percentile(latencies, q)
            stats[queue_wait_key(q)] = 1e3 * percentile(waits, q)
        stats[THROUGHPUT_KEY] = self._throughput_rps(samples, full, first_seen_at, now)
        stats[SAMPLE_COUNT_KEY] = float(len(samples))
        stats[LAST_SAMPLE_AGE_KEY] = max(0.0, now - (first_seen_at if last is None else last))
        return stats

    def _touch(self, now: float) -> float:
        if self._first_seen_at is None:
            self._first_seen_at = now
        return self._first_seen_at

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def _throughput_rps(
        self,
        samples: list[tuple[float, float, float]],
        full: bool,
        first_seen_at: float,
        now: float,
    ) -> float:
        if not samples:
            return 0.0
        # A young replica has not lived a whole window; a full buffer covers less.
        span_s = min(self.window_s, now - first_seen_at)
        if full:
            span_s = min(span_s, now - samples[0][0])
        return len(samples) / max(span_s, 1e-3)
