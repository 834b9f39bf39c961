"""The HTTP API as a FastAPI app over a model registry; Ray-free, so unit tests drive it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.responses import Response

from serve_app.classification import route as classification
from serve_app.config import AppArgs
from serve_app.embedding import route as embedding
from serve_app.errors import install_error_handlers
from serve_app.gateway.auth import FailedAuthLimit, KeyStore
from serve_app.gateway.body import json_response
from serve_app.gateway.client_address import ClientAddresses
from serve_app.gateway.middleware import GatewayMiddleware
from serve_app.gateway.rate_limit import RateLimiter
from serve_app.gateway.tenants import Tenants
from serve_app.generation import route as generation
from serve_app.metrics import IngressMetrics
from serve_app.protocol import TASK_PATHS
from serve_app.rerank import route as rerank
from serve_app.routing.cache import CachedModels, ResultCache
from serve_app.routing.context import RouteContext
from serve_app.routing.fair_shares import FairShares
from serve_app.routing.fallback import FallbackRouter
from serve_app.routing.model_cards import ModelCards, readiness
from serve_app.routing.registry import ModelRegistry
from serve_app.routing.replica_counts import RecentReplicaCounts, ReplicaCounts

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
    model_replica_counts: ReplicaCounts | None = None,
    recent_replica_counts: RecentReplicaCounts | None = None,
) -> FastAPI:
    """The app; the ingress passes Ray's metrics, replica count, proxy mode and the models'
    replica counts, tests pass nothing (`behind_haproxy`: client addresses come from the header
    our HAProxy sets; without `model_replica_counts` every model is asked for its card). The
    tenant limits follow `recent_replica_counts`, the background reader the ingress's coalescer
    already keeps (one reader, so the controller is not asked twice for the same counts)."""
    api = FastAPI(
        title="serve-inference",
        description="OpenAI-compatible inference API for Hugging Face models on Ray Serve.",
    )
    install_error_handlers(api)
    started_at = int(time.time())
    registry = registry.with_aliases(args.aliases)
    gateway = args.gateway
    tenants = Tenants.from_config(gateway.tenants)
    keys = KeyStore.from_config(gateway.auth, environ, tenants)
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
        tenant_latency=tenants is not None,
    )
    cache = ResultCache(gateway.cache.max_bytes) if gateway.cache.enabled else None
    cached = CachedModels(cache, metrics)
    router = FallbackRouter(
        {model.name: model for model in registry.all()},
        on_fallback=metrics.count_fallback if metrics is not None else _ignore_fallback,
    )

    cards = ModelCards(registry.all(), model_replica_counts)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> Response:
        status_code, body = readiness(await cards.get())
        return json_response(body, status_code=status_code)

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
                "routes": list(TASK_PATHS[model.task]),
                **described[model.name].fields(),
            }
            for model in registry.all()
        ]
        data += registry.alias_cards(started_at)
        return json_response({"object": "list", "data": data})

    shares = (
        FairShares(
            tenants,
            gateway.tenants,
            _running_replicas(registry, recent_replica_counts),
            ingress_replicas=replica_count,
        )
        if tenants is not None
        else None
    )
    context = RouteContext(registry, router, cached, args.max_request_body_bytes, shares)
    # One router per task, in the task's own folder (its paths: serve_app.protocol.TASK_PATHS).
    for add_routes in (
        embedding.add_routes,
        generation.add_routes,
        classification.add_routes,
        rerank.add_routes,
    ):
        add_routes(api, context)

    return api


def _running_replicas(
    registry: ModelRegistry, recent: RecentReplicaCounts | None
) -> Callable[[str], int | None]:
    """Each model's running replicas by model name, as last read (None while unknown)."""
    if recent is None:
        return lambda model: None
    deployments = {model.name: model.spec.deployment_name for model in registry.all()}
    return lambda model: recent.running(deployments[model])


def _ignore_fallback(model: str, fallback: str, reason: str) -> None:
    return None
