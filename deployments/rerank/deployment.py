"""The rerank deployment: one replica holds one cross-encoder, batching all callers' pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray import serve

from autoscaling.replica_stats import Timed
from deployments.contract import RelevanceScore
from deployments.loading.source import ModelSource
from deployments.replica.base import MODEL_RUNTIME_ENV, ModelReplica

if TYPE_CHECKING:
    from deployments.rerank.model import Pair, RerankModel


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": MODEL_RUNTIME_ENV},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class RerankDeployment(ModelReplica):
    """Scores documents against a query; a request's (query, document) pairs enter the batch
    queue one pair per item, at most `max_batch_size` at a time, so pairs of concurrent requests
    share passes as classification texts do."""

    task = "rerank"
    _model: RerankModel

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        from deployments.rerank.model import load

        checked = load(source, max_input_tokens)
        self._model = checked.model
        self._passes = self._start_passes(
            model_name,
            checked.agreement,
            source.parallel_passes,
            self._model.rerank,
            ("warm-up", "warm-up"),
        )

    def _batch_method(self) -> Any:
        return self._rerank_batch

    async def rerank(self, query: str, documents: list[str]) -> list[RelevanceScore]:
        """Each document's relevance to `query`, in document order."""
        pairs = [(query, document) for document in documents]
        return await self._each(pairs, self._rerank_batch, self._passes)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=8)
    async def _rerank_batch(self, pairs: list[Timed[Pair]]) -> list[RelevanceScore]:
        return await self._forward(self._passes, pairs)
