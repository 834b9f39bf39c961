"""The HTTP API as a FastAPI app over a model registry; Ray-free, so unit tests drive it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

from serve_app.auth import FailedAuthLimit, KeyStore
from serve_app.body import json_response, openapi_body, parse_json_body
from serve_app.cached_embeddings import CachedEmbedder
from serve_app.chat_route import chat
from serve_app.classify_route import ClassifyRequest, classify_response
from serve_app.client_address import ClientAddresses
from serve_app.completions_route import complete
from serve_app.config import AppArgs
from serve_app.deadline import Deadline
from serve_app.embedding_cache import EmbeddingCache
from serve_app.embeddings_route import check_options, embedding_response
from serve_app.errors import install_error_handlers
from serve_app.fallback import FALLBACK_HEADER, FallbackRouter
from serve_app.gateway_middleware import GatewayMiddleware
from serve_app.generation_schemas import ChatCompletionRequest, CompletionRequest
from serve_app.metrics import IngressMetrics
from serve_app.model_cards import ModelCards
from serve_app.rate_limit import RateLimiter, TokenMeter
from serve_app.registry import ModelRegistry, ServedModel
from serve_app.schemas import EmbeddingRequest

ModelT = TypeVar("ModelT", bound=BaseModel)
logger = logging.getLogger("ray.serve")


def build_api(
    registry: ModelRegistry,
    args: AppArgs,
    *,
    metrics: IngressMetrics | None = None,
    echo_request_id: bool = True,
    replica_count: Callable[[], int] = lambda: 1,
    environ: dict[str, str] | None = None,
    behind_haproxy: bool = False,
) -> FastAPI:
    """The app; the ingress passes Ray's metrics, replica count and proxy mode, tests pass
    nothing (`behind_haproxy`: client addresses come from the header our HAProxy sets)."""
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
        auth_limit=FailedAuthLimit(gateway.auth),
        limiter=RateLimiter(gateway.rate_limits, replica_count),
        addresses=ClientAddresses(gateway.trusted_proxies, behind_haproxy),
        request_timeout_s=gateway.request_timeout_s,
        metrics=metrics,
        echo_request_id=echo_request_id,
    )
    cache = EmbeddingCache(gateway.cache.max_bytes) if gateway.cache.enabled else None
    embedder = CachedEmbedder(cache, metrics)
    router = FallbackRouter(
        {model.name: model for model in registry.all()},
        on_fallback=metrics.count_fallback if metrics is not None else _ignore_fallback,
    )

    cards = ModelCards(registry.all())

    async def read(request: Request, schema: type[ModelT]) -> ModelT:
        """The body, read under the request's deadline (the gateway started it on arrival)."""
        deadline: Deadline = request.state.deadline
        return await deadline.read_body(
            parse_json_body(request, schema, args.max_request_body_bytes)
        )

    async def answer(
        request: Request, model: ServedModel, call: Callable[[ServedModel], Awaitable[Response]]
    ) -> Response:
        """Run `call` within the request's deadline, on `model` or its fallback."""
        deadline: Deadline = request.state.deadline
        response, routed = await deadline.run(router.call(model, call))
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
        ready = await cards.get()
        waiting = [name for name, card in ready.items() if card is None]
        if waiting:
            return json_response({"status": "waiting", "waiting_for": waiting}, status_code=503)
        return json_response({"status": "ready", "models": sorted(ready)})

    @api.get("/v1/models")
    async def list_models() -> Response:
        described = await cards.get()
        data = [
            {
                "id": model.name,
                "object": "model",
                "created": started_at,
                "owned_by": "serve-inference",
                "task": model.task,
                "ready": described[model.name] is not None,
                **(described[model.name] or {}),
            }
            for model in registry.all()
        ]
        data += registry.alias_cards(started_at)
        return json_response({"object": "list", "data": data})

    @api.post("/v1/embeddings", openapi_extra=openapi_body(EmbeddingRequest))
    async def create_embeddings(request: Request) -> Response:
        payload = await read(request, EmbeddingRequest)
        model = registry.resolve(payload.model, "embedding")
        check_options(payload, model)
        texts = payload.texts()
        meter: TokenMeter = request.state.meter

        async def call(served: ServedModel) -> Response:
            batch = await embedder.embed(served, texts)
            meter.charge(int(sum(batch.token_counts)))
            return json_response(embedding_response(payload, served.name, batch))

        return await answer(request, model, call)

    @api.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest))
    async def create_completion(request: Request) -> Response:
        payload = await read(request, CompletionRequest)
        model = registry.resolve(payload.model, "generation")
        limits = (request.state.deadline, request.state.meter)
        return await answer(request, model, lambda served: complete(payload, served, *limits))

    @api.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest))
    async def create_chat_completion(request: Request) -> Response:
        payload = await read(request, ChatCompletionRequest)
        model = registry.resolve(payload.model, "generation")
        limits = (request.state.deadline, request.state.meter)
        return await answer(request, model, lambda served: chat(payload, served, *limits))

    @api.post("/v1/classify", openapi_extra=openapi_body(ClassifyRequest))
    async def create_classification(request: Request) -> Response:
        payload = await read(request, ClassifyRequest)
        model = registry.resolve(payload.model, "classification")
        meter: TokenMeter = request.state.meter

        async def call(served: ServedModel) -> Response:
            results = await served.backend.classify(payload.texts())
            meter.charge(sum(result.tokens for result in results))
            return json_response(classify_response(served.name, results))

        return await answer(request, model, call)

    return api


def _ignore_fallback(model: str, fallback: str, reason: str) -> None:
    return None
