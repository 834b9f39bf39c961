"""The classification deployment: one replica holds one classifier, batching all callers' texts."""

from __future__ import annotations

from typing import Any

from ray import serve

from deployments.agreement_metrics import classification_agreement
from deployments.classification_model import Classification, ClassificationModel
from deployments.loading import ModelSource
from deployments.quantization_check import load_checked
from deployments.replica_base import MODEL_RUNTIME_ENV, ModelReplica
from deployments.replica_stats import Timed


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": MODEL_RUNTIME_ENV},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class ClassificationDeployment(ModelReplica):
    """Classifies texts; a request's inputs enter the batch queue one text per item, at most
    `max_batch_size` at a time, as in the embedding deployment."""

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        checked = load_checked(
            source,
            build=lambda s: ClassificationModel(s, max_input_tokens),
            probe=lambda model, texts: model.probabilities(texts)[0],
            compare=classification_agreement,
        )
        self._model = checked.model
        self._agreement = checked.agreement
        self._model.classify(["warm-up"])
        self._init_replica(model_name, parallel_passes=source.parallel_passes)
        self._passes = self._merged_forward(self._model.classify)

    def _batch_method(self) -> Any:
        return self._classify_batch

    async def classify(self, texts: list[str]) -> list[Classification]:
        return await self._each(texts, self._classify_batch)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _classify_batch(self, texts: list[Timed[str]]) -> list[Classification]:
        return await self._forward(self._passes, texts)

    def describe(self) -> dict[str, object]:
        return {
            "task": "classification",
            **self._model.describe(),
            "quantization_agreement": self._agreement.as_dict() if self._agreement else None,
            "batching": self._settings.model_dump(),
        }
