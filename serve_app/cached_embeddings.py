"""Embedding through the ingress cache: hits skip the model, misses go in one call."""

from __future__ import annotations

import hashlib

import numpy as np

from deployments.embedding_model import EmbeddingBatch
from serve_app.config import ModelSpec
from serve_app.embedding_cache import CachedEmbedding, EmbeddingCache
from serve_app.metrics import IngressMetrics
from serve_app.registry import ServedModel


def cache_namespace(spec: ModelSpec) -> str:
    """Name and revision: everything that changes a model's vectors for the same text."""
    # How passes run (threads, TorchScript: checked equal to eager, passes grouped by length)
    # does not change vectors.
    placement = {"cpu_threads", "parallel_passes", "device", "torchscript", "length_grouping"}
    fields = spec.source().model_dump_json(exclude=placement)
    revision = hashlib.sha256(f"{fields}|{spec.max_input_tokens}".encode()).hexdigest()[:16]
    return f"{spec.name}@{revision}"


class CachedEmbedder:
    def __init__(self, cache: EmbeddingCache | None, metrics: IngressMetrics | None) -> None:
        self._cache = cache
        self._metrics = metrics
        self._namespaces: dict[str, str] = {}

    async def embed(self, model: ServedModel, texts: list[str]) -> EmbeddingBatch:
        if self._cache is None or not model.spec.cache:
            batch: EmbeddingBatch = await model.backend.embed(texts)
            return batch
        namespace = self._namespaces.get(model.name)
        if namespace is None:
            namespace = self._namespaces[model.name] = cache_namespace(model.spec)
        found: dict[str, CachedEmbedding] = {}
        missing: list[str] = []
        for text in dict.fromkeys(texts):  # each distinct text once, in order
            entry = self._cache.get(namespace, text)
            if entry is None:
                missing.append(text)
            else:
                found[text] = entry
        if self._metrics is not None:
            self._metrics.count_cache(model.name, len(found), len(missing))
        if missing:
            computed: EmbeddingBatch = await model.backend.embed(missing)
            for text, vector, count in zip(
                missing, computed.vectors, computed.token_counts, strict=True
            ):
                entry = CachedEmbedding(vector, count)
                self._cache.put(namespace, text, entry)
                found[text] = entry
        entries = [found[text] for text in texts]
        return EmbeddingBatch(
            vectors=np.stack([entry.vector for entry in entries]),
            token_counts=[entry.token_count for entry in entries],
        )
