"""Metrics a model replica exports about its batches (Ray prefixes `ray_`, adds replica tags)."""

from __future__ import annotations

from ray.serve.metrics import Histogram

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
