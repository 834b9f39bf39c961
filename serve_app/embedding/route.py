"""POST /v1/embeddings: validate, turn token-array inputs into text, route to the model (through
the cache), shape OpenAI's response, with vectors as JSON floats or as OpenAI's base64
(little-endian float32) strings."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments.contract import EmbeddingBatch
from serve_app.embedding.schemas import EmbeddingRequest
from serve_app.embedding.token_inputs import TokenInputs
from serve_app.errors import InvalidRequest
from serve_app.gateway.body import json_response, openapi_body
from serve_app.protocol import usage
from serve_app.routing.context import RouteContext, limits
from serve_app.routing.registry import ServedModel


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
        "usage": usage(tokens),
    }


def _as_is(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return vector


def to_base64(vector: npt.NDArray[np.floating]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def add_routes(api: FastAPI, context: RouteContext) -> None:
    """This task's routes on `api`, each one taking the steps of `context`."""
    token_inputs = TokenInputs(context.registry.all())

    @api.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        payload = await context.read(request, EmbeddingRequest)
        model = context.resolve(payload.model, "embedding")
        check_options(payload, model)
        # Token ids are read as the requested model reads them, even if a fallback answers.
        texts = token_inputs.texts(payload, model)
        _, meter = limits(request)

        async def call(served: ServedModel) -> Response:
            batch = await context.cached.embed(served, texts)
            meter.charge(int(sum(batch.token_counts)))
            return json_response(embedding_response(payload, served.name, batch))

        return await context.answer(request, model, call, cost=len(texts))
