"""Deterministic stand-ins for model backends (and their replica counts), for tests that exercise
the API without Ray."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import numpy as np

from deployments.contract import (
    Classification,
    EmbeddingBatch,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    RelevanceScore,
)
from serve_app.routing.replica_counts import ReplicaCount

FAKE_DIMENSIONS = 8


def fake_vector(text: str, dimensions: int = FAKE_DIMENSIONS) -> np.ndarray:
    """A unit vector that depends only on `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEmbeddingBackend:
    """Answers like the embedding deployment: one unit vector per text, tokens = words + 2."""

    def __init__(self, *, ready: bool = True, error: Exception | None = None) -> None:
        self.ready = ready
        self.error = error
        self.calls: list[list[str]] = []

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        self.calls.append(list(texts))
        if self.error is not None:
            raise self.error
        return EmbeddingBatch(
            vectors=np.stack([fake_vector(text) for text in texts]),
            token_counts=[len(text.split()) + 2 for text in texts],
        )

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.ready:
            return None
        return {"task": "embedding", "dimensions": FAKE_DIMENSIONS, "device": "cpu"}


FAKE_LABELS = ("negative", "positive")
FAKE_PIECES = ("Once", " upon", " a", " time", " there", " was", " a", " fake")


class FakeClassificationBackend:
    """Answers like the classification deployment: a label per text from a hash of the text."""

    def __init__(self, *, ready: bool = True, error: Exception | None = None) -> None:
        self.ready = ready
        self.error = error
        self.calls: list[list[str]] = []

    async def classify(self, texts: list[str]) -> list[Classification]:
        self.calls.append(list(texts))
        if self.error is not None:
            raise self.error
        return [self._one(text) for text in texts]

    @staticmethod
    def _one(text: str) -> Classification:
        positive = float(fake_vector(text, 2)[0] * 0.5 + 0.5)
        scores = {FAKE_LABELS[0]: 1.0 - positive, FAKE_LABELS[1]: positive}
        label = max(scores, key=lambda name: scores[name])
        return Classification(label, scores[label], scores, len(text.split()) + 2)

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.ready:
            return None
        return {"task": "classification", "labels": list(FAKE_LABELS), "device": "cpu"}


class FakeGenerationBackend:
    """Answers like the generation deployment: FAKE_PIECES cut to max_tokens, one token each;
    prompt tokens are the prompt's (or the messages') words. Streams end with a finish_reason."""

    def __init__(self, *, ready: bool = True, error: Exception | None = None) -> None:
        self.ready = ready
        self.error = error
        self.requests: list[GenerationRequest] = []

    def _chunks(self, request: GenerationRequest) -> list[GenerationChunk]:
        prompt = request.prompt or " ".join(m.content for m in request.messages or ())
        prompt_tokens = len(request.prompt_token_ids or prompt.split())
        if request.max_tokens == 0:  # the prompt alone (echo): no completion tokens
            return [GenerationChunk("", prompt_tokens, 0, "length")]
        pieces = FAKE_PIECES[: request.max_tokens]
        reason: FinishReason = "length" if request.max_tokens <= len(FAKE_PIECES) else "stop"
        return [
            GenerationChunk(text, prompt_tokens, i + 1, reason if i == len(pieces) - 1 else None)
            for i, text in enumerate(pieces)
        ]

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        chunks = self._chunks(request)
        last = chunks[-1]
        assert last.finish_reason is not None
        return [
            GenerationResult(
                "".join(chunk.text for chunk in chunks),
                last.prompt_tokens,
                last.completion_tokens,
                last.finish_reason,
                index,
            )
            for index in range(request.n)
        ]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        for chunk in self._chunks(request):
            yield chunk

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.ready:
            return None
        return {"task": "generation", "device": "cpu", "context_tokens": 4096}


class FakeRerankBackend:
    """Answers like the rerank deployment: a score per document from a hash of the pair,
    tokens = the pair's words + 3."""

    def __init__(self, *, ready: bool = True, error: Exception | None = None) -> None:
        self.ready = ready
        self.error = error
        self.calls: list[tuple[str, list[str]]] = []

    async def rerank(self, query: str, documents: list[str]) -> list[RelevanceScore]:
        self.calls.append((query, list(documents)))
        if self.error is not None:
            raise self.error
        return [self.score(query, document) for document in documents]

    @staticmethod
    def score(query: str, document: str) -> RelevanceScore:
        relevance = float(fake_vector(f"{query}\n{document}", 2)[0] * 0.5 + 0.5)
        return RelevanceScore(relevance, len(query.split()) + len(document.split()) + 3)

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.ready:
            return None
        return {"task": "rerank", "activation": "Sigmoid", "device": "cpu"}


class FakeReplicaCounts:
    """Replica counts by deployment name, as a test sets them (absent: unknown); counts reads."""

    def __init__(self, counts: dict[str, ReplicaCount | None]) -> None:
        self.counts = counts
        self.reads = 0

    async def read(self, deployments: Sequence[str]) -> dict[str, ReplicaCount | None]:
        self.reads += 1
        await asyncio.sleep(0.01)
        return {name: self.counts.get(name) for name in deployments}
