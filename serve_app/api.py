"""The HTTP API as a FastAPI app over a model registry; Ray-free, so unit tests drive it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from serve_app.body import json_response, openapi_body, parse_json_body
from serve_app.config import AppArgs
from serve_app.embeddings_route import check_options, embedding_response
from serve_app.errors import install_error_handlers
from serve_app.registry import ModelRegistry
from serve_app.schemas import EmbeddingRequest

READY_TIMEOUT_S = 2.0


def build_api(registry: ModelRegistry, args: AppArgs) -> FastAPI:
    api = FastAPI(
        title="serve-inference",
        description="OpenAI-compatible inference API for Hugging Face models on Ray Serve.",
    )
    install_error_handlers(api)
    started_at = int(time.time())

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> Response:
        cards = await _describe_all(registry)
        waiting = [name for name, card in cards.items() if card is None]
        if waiting:
            return json_response({"status": "waiting", "waiting_for": waiting}, status_code=503)
        return json_response({"status": "ready", "models": sorted(cards)})

    @api.get("/v1/models")
    async def list_models() -> Response:
        cards = await _describe_all(registry)
        data = [
            {
                "id": model.name,
                "object": "model",
                "created": started_at,
                "owned_by": "serve-inference",
                "task": model.task,
                "ready": cards[model.name] is not None,
                **(cards[model.name] or {}),
            }
            for model in registry.all()
        ]
        return json_response({"object": "list", "data": data})

    @api.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        payload = await parse_json_body(request, EmbeddingRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "embedding")
        check_options(payload, model)
        batch = await model.backend.embed(payload.texts())
        return json_response(embedding_response(payload, model.name, batch))

    return api


async def _describe_all(registry: ModelRegistry) -> dict[str, dict[str, Any] | None]:
    """Each model's self-description, or None where it did not answer in time."""
    models = registry.all()
    answers = await asyncio.gather(*(m.backend.describe(READY_TIMEOUT_S) for m in models))
    return {model.name: answer for model, answer in zip(models, answers, strict=True)}
