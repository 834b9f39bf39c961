"""A simulated accelerator: a model deployment whose forward pass is a sleep.

One batch takes ``service_a_s + service_b_s * batch`` seconds spent in
``asyncio.sleep``, so dozens of replicas fit on two cores (``num_cpus: 0``)
and behave, for the autoscaler, like a batched model: ``@serve.batch`` forms
the batches, the knobs come from ``user_config`` (live through
``reconfigure``), and every request is recorded in ``ReplicaStats`` and
reported through ``record_autoscaling_stats``. ``autoscaling.simulator.service_model``
predicts its capacity from the same numbers.

By default batches form as ``@serve.batch`` forms them, which is what the simulator models:
each batch closes when its wait ends and queues for the accelerator, so a backlog does not
grow passes. ``merge_passes: true`` batches as the model replicas do instead
(``deployments.batching.passes.ForwardMerger``): the batches that queue behind a running pass
join the next one, up to ``max_batch_size``. Tests of what the ingress does in front of a model
(admission) use that, so that their model's throughput does not hinge on how its calls arrive.

Requests: ``handle.infer.remote(payload)`` or any HTTP request to the route. It also answers
the embedding contract (``embed``, ``describe``), one batch item per text, so the real ingress
can front it as an embedding model (admission and overload tests). ``load_s`` stands for
loading weights and the warm-up pass, so a cold start (scale from zero) costs what a real
model's would.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.requests import Request

from autoscaling.replica_stats import ReplicaStats, Timed
from deployments.batching.passes import BatchSettings, ForwardMerger
from deployments.contract import EmbeddingBatch
from deployments.replica.observation import BatchRecord


class SimulatedSettings(BaseModel):
    """``user_config`` of the simulated accelerator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=8, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0.0, le=10.0)
    service_a_s: float = Field(default=0.02, ge=0.0, description="fixed cost of one pass")
    service_b_s: float = Field(default=0.005, ge=0.0, description="cost per batch item")
    merge_passes: bool = Field(
        default=False, description="batches waiting behind a running pass join the next one"
    )

    def service_time_s(self, batch_size: int) -> float:
        return self.service_a_s + self.service_b_s * batch_size

    def batching(self) -> BatchSettings:
        return BatchSettings(
            max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s
        )


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class SimulatedAccelerator:
    """Answers each request with the size of the batch it rode in."""

    def __init__(self, stats_window_s: float = 10.0, load_s: float = 0.0) -> None:
        init_started_at = time.time()
        time.sleep(load_s)  # blocking on purpose: a real load holds the constructor too
        self._lifecycle = {"init_started_at": init_started_at, "loaded_at": time.time()}
        self._settings = SimulatedSettings()
        self._stats = ReplicaStats(window_s=stats_window_s)
        self._batches = BatchRecord()
        # One thread: the accelerator runs one pass at a time, whether merged or not.
        self._merger: ForwardMerger[str, dict[str, Any]] = ForwardMerger(
            ThreadPoolExecutor(max_workers=1),
            self._merged_pass,
            self._stats.observe_batch,
            time.monotonic,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = SimulatedSettings.model_validate(user_config or {})
        self._settings.batching().apply_to(self._infer_batch)
        self._settings.batching().apply_to(self._merged_batch)

    async def infer(self, payload: str = "") -> dict[str, Any]:
        return await self._batch(Timed(payload, time.monotonic()))

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        return await self.infer(body.decode("utf-8", errors="replace"))

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        """One batch item per text; every vector is the same unit vector."""
        now = time.monotonic()
        await asyncio.gather(*(self._batch(Timed(text, now)) for text in texts))
        return EmbeddingBatch(
            vectors=np.full((len(texts), 4), 0.5, dtype=np.float32), token_counts=[1] * len(texts)
        )

    def describe(self) -> dict[str, object]:
        return {"task": "embedding", "simulated": self._settings.model_dump()}

    async def _batch(self, item: Timed[str]) -> dict[str, Any]:
        if self._settings.merge_passes:
            return await self._merged_batch(item)
        return await self._infer_batch(item)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _infer_batch(self, items: list[Timed[str]]) -> list[dict[str, Any]]:
        started_at = time.monotonic()
        await asyncio.sleep(self._settings.service_time_s(len(items)))
        self._stats.observe_batch([i.enqueued_at for i in items], started_at, time.monotonic())
        self._batches.add(len(items))
        return [{"batch_size": len(items), "payload": item.item} for item in items]

    # As the model replicas: batches hand over at once, to queue in the merger, not in Serve.
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01, max_concurrent_batches=64)
    async def _merged_batch(self, items: list[Timed[str]]) -> list[dict[str, Any]]:
        return await self._merger.submit(items, self._settings.max_batch_size)

    def _merged_pass(self, payloads: list[str]) -> list[dict[str, Any]]:
        """One merged pass, on the merger's thread (the merger records it in the stats)."""
        time.sleep(self._settings.service_time_s(len(payloads)))
        self._batches.add(len(payloads))
        return [{"batch_size": len(payloads), "payload": payload} for payload in payloads]

    def record_autoscaling_stats(self) -> dict[str, float]:
        return self._stats.snapshot(time.monotonic())

    def lifecycle(self) -> dict[str, float]:
        """Wall-clock times (``time.time()``) this replica began and finished loading."""
        return dict(self._lifecycle)

    def batch_sizes(self) -> list[int]:
        """Sizes of recent batches on this replica, oldest first."""
        return self._batches.sizes()
