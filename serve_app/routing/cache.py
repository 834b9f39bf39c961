"""Embeddings and rerank scores through the ingress cache: hits skip the model, misses go to it
in one call.

The cache is a byte-bounded LRU, one entry per (model, revision, input): an embedding's vector by
its text, a rerank score by its query and document. What is applied after the model (an
embedding's `dimensions` and `encoding_format`, a rerank's order and `top_n`) is applied to
cached values, so one entry serves every request for that input.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from deployments.contract import EmbeddingBatch, RelevanceScore
from serve_app.config import ModelSpec
from serve_app.metrics import IngressMetrics
from serve_app.routing.registry import ServedModel

_ENTRY_OVERHEAD_BYTES = 200  # key tuple, dict slot, array header: a rough, fixed cost

Input = TypeVar("Input")


@dataclass(frozen=True)
class CachedResult:
    values: npt.NDArray[np.float32]  # an embedding's vector; a rerank score as one value
    token_count: int


CacheKey = tuple[str, str]  # (model namespace: name + revision, input)
# An entry as stored: a plain tuple of untracked objects (an array, an int), which CPython's
# cycle collector stops tracking. A full cache holds tens of thousands of entries; stored as
# CachedResult objects, every full collection in the ingress walked all of them.
_Stored = tuple[npt.NDArray[np.float32], int]


class ResultCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, _Stored] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _size(key: CacheKey, values: npt.NDArray[np.float32]) -> int:
        return len(key[1].encode("utf-8")) + values.nbytes + _ENTRY_OVERHEAD_BYTES

    def get(self, namespace: str, key: str) -> CachedResult | None:
        stored = self._entries.get((namespace, key))
        if stored is None:
            self.misses += 1
            return None
        self._entries.move_to_end((namespace, key))
        self.hits += 1
        return CachedResult(*stored)

    def put(self, namespace: str, key: str, entry: CachedResult) -> None:
        full_key = (namespace, key)
        # Own a compact copy: a row view would keep the whole response batch alive.
        values = np.array(entry.values, dtype=np.float32)
        size = self._size(full_key, values)
        if size > self.max_bytes:
            return
        previous = self._entries.pop(full_key, None)
        if previous is not None:
            self.used_bytes -= self._size(full_key, previous[0])
        self._entries[full_key] = (values, int(entry.token_count))
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            old_key, (old_values, _) = self._entries.popitem(last=False)
            self.used_bytes -= self._size(old_key, old_values)


def cache_namespace(spec: ModelSpec) -> str:
    """Name and revision: everything that changes a model's outputs for the same input."""
    # How passes run (threads, TorchScript: checked equal to eager, passes grouped by length)
    # and how streams are chunked do not change outputs.
    placement = {
        "cpu_threads",
        "parallel_passes",
        "device",
        "torchscript",
        "length_grouping",
        "stream_interval",
    }
    fields = spec.source().model_dump_json(exclude=placement)
    revision = hashlib.sha256(f"{fields}|{spec.max_input_tokens}".encode()).hexdigest()[:16]
    return f"{spec.name}@{revision}"


def pair_key(query: str, document: str) -> str:
    """One key per (query, document): the query's length keeps "ab"+"c" apart from "a"+"bc"."""
    return f"{len(query)}:{query}{document}"


class CachedModels:
    """The calls that may be answered from the cache; a model with `cache: false`, or no cache
    at all, is always asked."""

    def __init__(self, cache: ResultCache | None, metrics: IngressMetrics | None) -> None:
        self._cache = cache
        self._metrics = metrics
        self._namespaces: dict[str, str] = {}

    def _uses_cache(self, model: ServedModel) -> bool:
        return self._cache is not None and model.spec.cache

    async def embed(self, model: ServedModel, texts: list[str]) -> EmbeddingBatch:
        if not self._uses_cache(model):
            batch: EmbeddingBatch = await model.backend.embed(texts)
            return batch

        async def compute(missing: list[str]) -> list[CachedResult]:
            computed: EmbeddingBatch = await model.backend.embed(missing)
            return [
                CachedResult(vector, count)
                for vector, count in zip(computed.vectors, computed.token_counts, strict=True)
            ]

        entries = await self._through_cache(model, texts, texts, compute)
        return EmbeddingBatch(
            vectors=np.stack([entry.values for entry in entries]),
            token_counts=[entry.token_count for entry in entries],
        )

    async def rerank(
        self, model: ServedModel, query: str, documents: list[str]
    ) -> list[RelevanceScore]:
        if not self._uses_cache(model):
            scores: list[RelevanceScore] = await model.backend.rerank(query, documents)
            return scores

        async def compute(missing: list[str]) -> list[CachedResult]:
            computed: list[RelevanceScore] = await model.backend.rerank(query, missing)
            return [
                CachedResult(np.array([score.score], dtype=np.float32), score.tokens)
                for score in computed
            ]

        keys = [pair_key(query, document) for document in documents]
        entries = await self._through_cache(model, documents, keys, compute)
        return [RelevanceScore(float(entry.values[0]), entry.token_count) for entry in entries]

    async def _through_cache(
        self,
        model: ServedModel,
        inputs: Sequence[Input],
        keys: Sequence[str],
        compute: Callable[[list[Input]], Awaitable[list[CachedResult]]],
    ) -> list[CachedResult]:
        """Each input's entry, in order: hits from the cache, each distinct miss computed once
        in one call and stored."""
        assert self._cache is not None
        namespace = self._namespaces.get(model.name)
        if namespace is None:
            namespace = self._namespaces[model.name] = cache_namespace(model.spec)
        found: dict[str, CachedResult] = {}
        missing: dict[str, Input] = {}
        for key, item in zip(keys, inputs, strict=True):
            if key in found or key in missing:
                continue
            entry = self._cache.get(namespace, key)
            if entry is None:
                missing[key] = item
            else:
                found[key] = entry
        if self._metrics is not None:
            self._metrics.count_cache(model.name, len(found), len(missing))
        if missing:
            computed = await compute(list(missing.values()))
            for key, entry in zip(missing, computed, strict=True):
                self._cache.put(namespace, key, entry)
                found[key] = entry
        return [found[key] for key in keys]
