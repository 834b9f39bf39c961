"""The simulated accelerator (deployments/simulated) answering as an embedding model, so the
real ingress can sit in front of a model whose capacity is known exactly: each text is one item
of the accelerator's `@serve.batch` batches, and the vectors are constant."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from ray import serve

from deployments.contract import EmbeddingBatch
from deployments.simulated.deployment import SimulatedAccelerator

DIMENSIONS = 4


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class SimulatedEmbedder(SimulatedAccelerator.func_or_class):  # type: ignore[name-defined]
    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        await asyncio.gather(*(self.infer(text) for text in texts))
        vectors = np.full((len(texts), DIMENSIONS), 0.5, dtype=np.float32)
        return EmbeddingBatch(vectors=vectors, token_counts=[1] * len(texts))

    async def describe(self) -> dict[str, Any]:
        return {"simulated": True}
