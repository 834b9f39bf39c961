"""The embedding deployment: one replica holds one model and batches every caller's inputs."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from ray import serve

from deployments.agreement_metrics import embedding_agreement
from deployments.batch_record import BatchRecord
from deployments.batch_settings import BatchSettings
from deployments.embedding_model import EmbeddingBatch, EmbeddingModel
from deployments.loading import ModelSource
from deployments.quantization_check import load_checked

EmbeddedText = tuple[npt.NDArray[np.float32], int]


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class EmbeddingDeployment:
    """Embeds texts; concurrent requests share forward passes through `@serve.batch`.

    A request's inputs enter the batch queue one text per item, at most `max_batch_size` at a
    time, so a 2048-input request takes its turn with everyone else instead of holding the model.
    """

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        self._model_name = model_name
        checked = load_checked(
            source,
            build=lambda s: EmbeddingModel(s, max_input_tokens),
            probe=lambda model, texts: model.embed(list(texts)).vectors,
            compare=embedding_agreement,
        )
        self._model = checked.model
        self._agreement = checked.agreement
        # Warm up before Serve reports the replica healthy: the first pass is the slow one.
        self._model.embed(["warm-up"])
        # Forward passes run off the event loop so requests keep queueing while a batch runs.
        self._forward_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._settings = BatchSettings()
        self._batches = BatchRecord()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = BatchSettings.from_user_config(user_config)
        self._settings.apply_to(self._embed_batch)

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        results: list[EmbeddedText] = []
        step = self._settings.max_batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            results.extend(await asyncio.gather(*(self._embed_batch(text) for text in chunk)))
        return EmbeddingBatch(
            vectors=np.stack([vector for vector, _ in results]),
            token_counts=[count for _, count in results],
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, texts: list[str]) -> list[EmbeddedText]:
        self._batches.add(len(texts))
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._forward_pool, self._model.embed, texts)
        return list(zip(batch.vectors, batch.token_counts, strict=True))

    def describe(self) -> dict[str, object]:
        return {
            "task": "embedding",
            **self._model.describe(),
            "quantization_agreement": self._agreement.as_dict() if self._agreement else None,
            "batching": self._settings.model_dump(),
        }

    def batch_sizes(self) -> list[int]:
        """Sizes of recent forward passes on this replica, oldest first."""
        return self._batches.sizes()

    def reset_batch_sizes(self) -> None:
        self._batches.clear()

    def replica_info(self) -> dict[str, object]:
        """Which process answers: for tests and operators checking restarts."""
        context = serve.get_replica_context()
        return {"pid": os.getpid(), "replica_id": context.replica_id.unique_id}
