"""What a right answer looks like, for load tests that must count more than status codes."""

from __future__ import annotations

import math
from collections.abc import Callable

import orjson

MINILM_DIMENSIONS = 384


def valid_embeddings(dimensions: int = MINILM_DIMENSIONS) -> Callable[[bytes], bool]:
    """A check of an /v1/embeddings body: every vector has `dimensions` finite floats and unit
    length (the models normalise), in input order."""

    def check(payload: bytes) -> bool:
        try:
            data = orjson.loads(payload)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        if not data or [item.get("index") for item in data] != list(range(len(data))):
            return False
        for item in data:
            vector = item.get("embedding")
            if not isinstance(vector, list) or len(vector) != dimensions:
                return False
            if not all(isinstance(x, float) and math.isfinite(x) for x in vector):
                return False
            if abs(math.sqrt(sum(x * x for x in vector)) - 1.0) > 1e-3:
                return False
        return True

    return check


def valid_classifications(labels: set[str]) -> Callable[[bytes], bool]:
    """A check of a /v1/classify body: a known label and scores that sum to about 1."""

    def check(payload: bytes) -> bool:
        try:
            data = orjson.loads(payload)["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False
        for item in data:
            scores = item.get("scores") or {}
            if item.get("label") not in labels or set(scores) != labels:
                return False
            if abs(sum(scores.values()) - 1.0) > 1e-3 and len(labels) > 1:
                return False
        return bool(data)

    return check
