"""The HTTP API as a FastAPI app over a model registry; Ray-free, so unit tests drive it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response, StreamingResponse

from serve_app.auth import KeyStore
from serve_app.body import json_response, openapi_body, parse_json_body
from serve_app.cached_embeddings import CachedEmbedder
from serve_app.chat_route import chat
from serve_app.classify_route import ClassifyRequest, classify_response
from serve_app.completions_route import complete
from serve_app.config import AppArgs
from serve_app.deadline import TIMEOUT_HEADER, timeout_from_header, within
from serve_app.embedding_cache import EmbeddingCache
from serve_app.embeddings_route import check_options, embedding_response
from serve_app.errors import install_error_handlers
from serve_app.fallback import FALLBACK_HEADER, FallbackRouter
from serve_app.gateway_middleware import GatewayMiddleware
from serve_app.generation_schemas import ChatCompletionRequest, CompletionRequest
from serve_app.metrics import IngressMetrics
from serve_app.rate_limit import RateLimiter
from serve_app.registry import ModelRegistry, ServedModel
from serve_app.schemas import EmbeddingRequest

READY_TIMEOUT_S = 2.0
logger = logging.getLogger("ray.serve")


def build_api(
    registry: ModelRegistry,
    args: AppArgs,
    *,
    metrics: IngressMetrics | None = None,
    echo_request_id: bool = True,
    replica_count: Callable[[], int] = lambda: 1,
    environ: dict[str, str] | None = None,
) -> FastAPI:
    """The app; the ingress passes Ray's metrics and replica count, tests pass nothing."""
    api = FastAPI(
        title="serve-inference",
        description="OpenAI-compatible inference API for Hugging Face models on Ray Serve.",
    )
    install_error_handlers(api)
    started_at = int(time.time())
    registry = registry.with_aliases(args.aliases)
    gateway = args.gateway
    keys = KeyStore.from_config(gateway.auth, environ)
    if not keys.enabled:
        logger.warning("no API keys are configured: /v1 routes are open to anyone who can connect")
    api.add_middleware(
        GatewayMiddleware,
        keys=keys,
        limiter=RateLimiter(gateway.rate_limits, replica_count),
        metrics=metrics,
        echo_request_id=echo_request_id,
    )
    cache = EmbeddingCache(gateway.cache.max_bytes) if gateway.cache.enabled else None
    embedder = CachedEmbedder(cache, metrics)
    router = FallbackRouter(
        {model.name: model for model in registry.all()},
        on_fallback=metrics.count_fallback if metrics is not None else _ignore_fallback,
    )

    def deadline_s(request: Request) -> float:
        return timeout_from_header(
            request.headers.get(TIMEOUT_HEADER),
            gateway.request_timeout_s,
            gateway.max_request_timeout_s,
        )

    async def answer(
        request: Request, model: ServedModel, call: Callable[[ServedModel], Awaitable[Response]]
    ) -> Response:
        """Run `call` within the request's deadline, on `model` or its fallback."""
        response, routed = await within(deadline_s(request), router.call(model, call))
        request.state.model = routed.model.name
        if routed.fallback_reason is not None:
            response.headers[FALLBACK_HEADER] = model.name
            response.headers["x-fallback-reason"] = routed.fallback_reason
        return response

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
        texts = payload.texts()

        async def call(served: ServedModel) -> Response:
            batch = await embedder.embed(served, texts)
            request.state.tokens = sum(batch.token_counts)
            return json_response(embedding_response(payload, served.name, batch))

        return await answer(request, model, call)

    @api.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest))
    async def create_completion(request: Request) -> Response:
        payload = await parse_json_body(request, CompletionRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "generation")
        response = await answer(request, model, lambda served: complete(payload, served))
        request.state.tokens = _usage_tokens(response)
        return response

    @api.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest))
    async def create_chat_completion(request: Request) -> Response:
        payload = await parse_json_body(request, ChatCompletionRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "generation")
        response = await answer(request, model, lambda served: chat(payload, served))
        request.state.tokens = _usage_tokens(response)
        return response

    @api.post("/v1/classify", openapi_extra=openapi_body(ClassifyRequest))
    async def create_classification(request: Request) -> Response:
        payload = await parse_json_body(request, ClassifyRequest, args.max_request_body_bytes)
        model = registry.resolve(payload.model, "classification")

        async def call(served: ServedModel) -> Response:
            results = await served.backend.classify(payload.texts())
            return json_response(classify_response(served.name, results))

        return await answer(request, model, call)

    return api


def _ignore_fallback(model: str, fallback: str, reason: str) -> None:
    return None


def _usage_tokens(response: Response) -> int:
    """Total tokens of a JSON completion (0 for a stream: its usage is known only at the end)."""
    if isinstance(response, StreamingResponse):
        return 0
    usage = orjson.loads(response.body).get("usage") or {}
    return int(usage.get("total_tokens", 0))


async def _describe_all(registry: ModelRegistry) -> dict[str, dict[str, Any] | None]:
    """Each model's self-description, or None where it did not answer in time."""
    models = registry.all()
    answers = await asyncio.gather(*(m.backend.describe(READY_TIMEOUT_S) for m in models))
    return {model.name: answer for model, answer in zip(models, answers, strict=True)}
