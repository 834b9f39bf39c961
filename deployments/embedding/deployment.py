"""The embedding deployment: one replica holds one model and batches every caller's inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from ray import serve

from autoscaling.replica_stats import Timed
from deployments.contract import EmbeddingBatch
from deployments.loading.source import ModelSource
from deployments.replica.base import MODEL_RUNTIME_ENV, ModelReplica

if TYPE_CHECKING:
    from deployments.embedding.model import EmbeddingModel

EmbeddedText = tuple[npt.NDArray[np.float32], int]


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": MODEL_RUNTIME_ENV},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class EmbeddingDeployment(ModelReplica):
    """Embeds texts; concurrent requests share forward passes through `@serve.batch`.

    A request's inputs enter the batch queue one text per item, at most `max_batch_size` at a
    time, so a 2048-input request takes its turn with everyone else instead of holding the model.
    """

    task = "embedding"
    _model: EmbeddingModel

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        from deployments.embedding.model import load

        checked = load(source, max_input_tokens)
        self._model = checked.model
        self._passes = self._start_passes(
            model_name, checked.agreement, source.parallel_passes, self._embed_rows, "warm-up"
        )

    def _batch_method(self) -> Any:
        return self._embed_batch

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        results = await self._each(texts, self._embed_batch, self._passes)
        return EmbeddingBatch(
            vectors=np.stack([vector for vector, _ in results]),
            token_counts=[count for _, count in results],
        )

    def _embed_rows(self, texts: list[str]) -> list[EmbeddedText]:
        batch = self._model.encode(texts)
        return list(zip(batch.vectors, batch.token_counts, strict=True))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _embed_batch(self, texts: list[Timed[str]]) -> list[EmbeddedText]:
        return await self._forward(self._passes, texts)
