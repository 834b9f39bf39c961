"""The classification deployment: one replica holds one classifier, batching all callers' texts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray import serve

from autoscaling.replica_stats import Timed
from deployments.contract import Classification
from deployments.loading.source import ModelSource
from deployments.replica.base import MODEL_RUNTIME_ENV, ModelReplica

if TYPE_CHECKING:
    from deployments.classification.model import ClassificationModel


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": MODEL_RUNTIME_ENV},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class ClassificationDeployment(ModelReplica):
    """Classifies texts; a request's inputs enter the batch queue one text per item, at most
    `max_batch_size` at a time, as in the embedding deployment."""

    task = "classification"
    _model: ClassificationModel

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        from deployments.classification.model import load

        checked = load(source, max_input_tokens)
        self._model = checked.model
        self._passes = self._start_passes(
            model_name, checked.agreement, source.parallel_passes, self._model.classify, "warm-up"
        )

    def _batch_method(self) -> Any:
        return self._classify_batch

    async def classify(self, texts: list[str]) -> list[Classification]:
        return await self._each(texts, self._classify_batch, self._passes)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _classify_batch(self, texts: list[Timed[str]]) -> list[Classification]:
        return await self._forward(self._passes, texts)
