"""The HTTP API as a FastAPI app over a model registry; Ray-free, so unit tests drive it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from serve_app.body import json_response, openapi_body, parse_json_body
from serve_app.chat_route import chat
from serve_app.classify_route import ClassifyRequest, classify_response
from serve_app.completions_route import complete
from serve_app.config import AppArgs
from serve_app.embeddings_route import check_options, embedding_response
from serve_app.errors import install_error_handlers
from serve_app.generation_schemas import ChatCompletionRequest, CompletionRequest
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
    registry = registry.with_aliases(args.aliases)

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
        data += registry.alias_cards(started_at)
        return json_response({"object": "list", "data": data})

    @api.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        payload = await parse_json_body(request, EmbeddingRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "embedding")
        check_options(payload, model)
        batch = await model.backend.embed(payload.texts())
        return json_response(embedding_response(payload, model.name, batch))

    @api.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest))
    async def create_completion(request: Request) -> Response:
        payload = await parse_json_body(request, CompletionRequest, args.max_request_body_bytes)
        return await complete(payload, registry.resolve(payload.model, "generation"))

    @api.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest))
    async def create_chat_completion(request: Request) -> Response:
        payload = await parse_json_body(request, ChatCompletionRequest, args.max_request_body_bytes)
        return await chat(payload, registry.resolve(payload.model, "generation"))

    @api.post("/v1/classify", openapi_extra=openapi_body(ClassifyRequest))
    async def create_classification(request: Request) -> Response:
        payload = await parse_json_body(request, ClassifyRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "classification")
        results = await model.backend.classify(payload.texts())
        return json_response(classify_response(model.name, results))

    return api


async def _describe_all(registry: ModelRegistry) -> dict[str, dict[str, Any] | None]:
    """Each model's self-description, or None where it did not answer in time."""
    models = registry.all()
    answers = await asyncio.gather(*(m.backend.describe(READY_TIMEOUT_S) for m in models))
    return {model.name: answer for model, answer in zip(models, answers, strict=True)}
