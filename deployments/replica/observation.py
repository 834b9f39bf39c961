"""What a model replica records about each forward pass, in one place: its own bounded record
of batch sizes (for tests and operators), the latency window the autoscaling policy reads, and
Prometheus metrics (Ray prefixes `ray_` and adds replica tags).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from ray.serve.metrics import Histogram

from autoscaling.replica_stats import ReplicaStats


class BatchObserver:
    def __init__(self, model_name: str, stats_window_s: float = 10.0) -> None:
        self.record = BatchRecord()
        self.stats = ReplicaStats(window_s=stats_window_s)
        self.metrics = BatchMetrics(model_name)

    def observe(self, enqueued_at: Sequence[float], started_at: float, finished_at: float) -> None:
        """One batch: when each input entered the queue, when the pass started and ended
        (all `time.monotonic()`)."""
        self.record.add(len(enqueued_at))
        self.stats.observe_batch(list(enqueued_at), started_at, finished_at)
        self.metrics.observe_batch(
            len(enqueued_at), [started_at - t for t in enqueued_at], finished_at - started_at
        )

    def observe_request(
        self, enqueued_at: float, started_at: float, finished_at: float, batch_size: int
    ) -> None:
        """One request of a continuous batch, which ran beside `batch_size - 1` others when it
        ended; its wait is the time before it joined the batch."""
        self.record.add(batch_size)
        self.stats.observe_batch([enqueued_at], started_at, finished_at)
        self.metrics.observe_batch(batch_size, [started_at - enqueued_at], finished_at - started_at)

    def autoscaling_stats(self) -> dict[str, float]:
        """What `record_autoscaling_stats` returns to Serve's controller."""
        return self.stats.snapshot(time.monotonic())


class BatchRecord:
    """The sizes of the last `capacity` forward passes, oldest first."""

    def __init__(self, capacity: int = 4096) -> None:
        self._sizes: deque[int] = deque(maxlen=capacity)

    def add(self, size: int) -> None:
        self._sizes.append(size)

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def clear(self) -> None:
        self._sizes.clear()


# Ray 2.60 exports a histogram's _sum from bucket midpoints, not the observed values. Edges
# halfway between integers put sizes 1 and 2 exactly on their midpoints (with edges at 1, 2, 4
# a pass of 1 input was exported as 0.5) and keep every exported size >= 1.
_SIZE_BOUNDARIES = [0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 64.5, 128.5, 256.5, 512.5]
_TIME_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class BatchMetrics:
    def __init__(self, model_name: str) -> None:
        self._tags = {"model": model_name}
        self.batch_size = Histogram(
            "inference_batch_size",
            description="Inputs per forward pass.",
            boundaries=_SIZE_BOUNDARIES,
            tag_keys=("model",),
        )
        self.queue_wait_s = Histogram(
            "inference_batch_queue_wait_s",
            description="Time an input waited in the batch queue before its forward pass.",
            boundaries=_TIME_BOUNDARIES_S,
            tag_keys=("model",),
        )
        self.forward_s = Histogram(
            "inference_forward_s",
            description="Model forward time per batch, seconds.",
            boundaries=_TIME_BOUNDARIES_S,
            tag_keys=("model",),
        )

    def observe_batch(self, size: int, queue_waits_s: list[float], forward_s: float) -> None:
        self.batch_size.observe(size, tags=self._tags)
        for wait_s in queue_waits_s:
            self.queue_wait_s.observe(wait_s, tags=self._tags)
        self.forward_s.observe(forward_s, tags=self._tags)
