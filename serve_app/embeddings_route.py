"""POST /v1/embeddings: validate, route to the model, shape OpenAI's response."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from deployments.embedding_model import EmbeddingBatch
from serve_app.encoding import to_base64
from serve_app.errors import InvalidRequest
from serve_app.registry import ServedModel
from serve_app.schemas import EmbeddingRequest


def check_options(request: EmbeddingRequest, model: ServedModel) -> None:
    if request.dimensions is not None and not model.spec.supports_dimensions:
        raise InvalidRequest(
            f"The model '{model.name}' does not support 'dimensions'; omit it.",
            param="dimensions",
        )


def shorten(vectors: npt.NDArray[np.float32], dimensions: int) -> npt.NDArray[np.float32]:
    """Matryoshka truncation: keep the first `dimensions` and restore unit length."""
    head = vectors[:, :dimensions]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return (head / np.where(norms == 0, 1, norms)).astype(np.float32)


def embedding_response(
    request: EmbeddingRequest, model_name: str, batch: EmbeddingBatch
) -> dict[str, Any]:
    vectors = batch.vectors
    if request.dimensions is not None:
        width = vectors.shape[1]
        if request.dimensions > width:
            raise InvalidRequest(
                f"'dimensions' must be at most {width} for the model '{model_name}'.",
                param="dimensions",
            )
        vectors = shorten(vectors, request.dimensions)
    encode = to_base64 if request.encoding_format == "base64" else _as_is
    tokens = int(sum(batch.token_counts))
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector)}
            for index, vector in enumerate(vectors)
        ],
        "model": model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _as_is(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return vector
