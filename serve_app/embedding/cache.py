"""Embedding through the ingress cache: hits skip the model, misses go in one call.

The cache is a byte-bounded LRU, one entry per (model, revision, text). Options that change the
vector after the model (`dimensions`, `encoding_format`) are applied to cached vectors, so one
entry serves them all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deployments.contract import EmbeddingBatch
from serve_app.config import ModelSpec
from serve_app.metrics import IngressMetrics
from serve_app.routing.registry import ServedModel

_ENTRY_OVERHEAD_BYTES = 200  # key tuple, dict slot, array header: a rough, fixed cost


@dataclass(frozen=True)
class CachedEmbedding:
    vector: npt.NDArray[np.float32]
    token_count: int


CacheKey = tuple[str, str]  # (model namespace: name + revision, input text)


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, CachedEmbedding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: CacheKey, entry: CachedEmbedding) -> int:
        return len(key[1].encode("utf-8")) + entry.vector.nbytes + _ENTRY_OVERHEAD_BYTES

    def get(self, namespace: str, text: str) -> CachedEmbedding | None:
        key = (namespace, text)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, namespace: str, text: str, entry: CachedEmbedding) -> None:
        key = (namespace, text)
        size = self._size(key, entry)
        if size > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.used_bytes -= self._size(key, previous)
        # Own a compact copy: a row view would keep the whole response batch alive.
        stored = CachedEmbedding(np.array(entry.vector, dtype=np.float32), entry.token_count)
        self._entries[key] = stored
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            old_key, old_entry = self._entries.popitem(last=False)
            self.used_bytes -= self._size(old_key, old_entry)


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
