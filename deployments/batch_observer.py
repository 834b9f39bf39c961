"""What a model replica records about each forward pass, in one place: its own bounded record
of batch sizes, the latency window the autoscaling policy reads, and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence

from deployments.batch_record import BatchRecord
from deployments.model_metrics import BatchMetrics
from deployments.replica_stats import ReplicaStats


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
