"""The ingress deployment: the HTTP API in front of the model deployments' handles."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from serve_app.api import build_api
from serve_app.backends import HandleBackend
from serve_app.coalescer import EmbeddingCoalescer
from serve_app.config import AppArgs
from serve_app.metrics import IngressMetrics
from serve_app.registry import ModelRegistry, ServedModel

logger = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
@serve.ingress()
class Ingress:
    """Holds one `DeploymentHandle` per served model; the FastAPI app is built per replica."""

    def __init__(self, args: AppArgs, handles: dict[str, Any]) -> None:
        self._args = args
        coalescer = EmbeddingCoalescer()
        self._registry = ModelRegistry(
            ServedModel(spec=spec, backend=HandleBackend(handles[spec.name], spec.name, coalescer))
            for spec in args.models
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(
            self._registry,
            self._args,
            metrics=IngressMetrics(),
            echo_request_id=False,  # Serve's proxy (or HAProxy) already echoes x-request-id
            replica_count=_ingress_replica_count,
        )


def _ingress_replica_count() -> int:
    """How many ingress replicas share the rate limits (each enforces its share)."""
    return max(1, serve.get_replica_context().world_size)
