"""The classification deployment: one replica holds one classifier, batching all callers' texts."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from deployments.agreement_metrics import classification_agreement
from deployments.batch_record import BatchRecord
from deployments.batch_settings import BatchSettings
from deployments.classification_model import Classification, ClassificationModel
from deployments.loading import ModelSource
from deployments.quantization_check import load_checked


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=256,
    health_check_period_s=10,
)
class ClassificationDeployment:
    """Classifies texts; a request's inputs enter the batch queue one text per item, at most
    `max_batch_size` at a time, as in the embedding deployment."""

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        self._model_name = model_name
        checked = load_checked(
            source,
            build=lambda s: ClassificationModel(s, max_input_tokens),
            probe=lambda model, texts: model.probabilities(texts)[0],
            compare=classification_agreement,
        )
        self._model = checked.model
        self._agreement = checked.agreement
        self._model.classify(["warm-up"])
        # Forward passes run off the event loop so requests keep queueing while a batch runs.
        self._forward_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._settings = BatchSettings()
        self._batches = BatchRecord()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = BatchSettings.from_user_config(user_config)
        self._settings.apply_to(self._classify_batch)

    async def classify(self, texts: list[str]) -> list[Classification]:
        results: list[Classification] = []
        step = self._settings.max_batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            results.extend(await asyncio.gather(*(self._classify_batch(text) for text in chunk)))
        return results

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _classify_batch(self, texts: list[str]) -> list[Classification]:
        self._batches.add(len(texts))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._forward_pool, self._model.classify, texts)

    def describe(self) -> dict[str, object]:
        return {
            "task": "classification",
            **self._model.describe(),
            "quantization_agreement": self._agreement.as_dict() if self._agreement else None,
            "batching": self._settings.model_dump(),
        }

    def batch_sizes(self) -> list[int]:
        return self._batches.sizes()

    def reset_batch_sizes(self) -> None:
        self._batches.clear()

    def ping(self) -> float:
        return time.time()
