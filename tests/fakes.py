"""Deterministic stand-ins for model backends, for tests that exercise the API without Ray."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from deployments.embedding_model import EmbeddingBatch

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
