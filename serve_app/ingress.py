"""The ingress deployment: the HTTP API in front of the model deployments' handles."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from fastapi import FastAPI
from ray import serve

from serve_app.api import build_api
from serve_app.config import AppArgs
from serve_app.embedding.coalescer import EmbeddingCoalescer, calls_by_replicas
from serve_app.gateway.haproxy_wrapper import BINARY_ENV, is_wrapper
from serve_app.metrics import IngressMetrics
from serve_app.objective import check_deployed_policies
from serve_app.routing.backends import HandleBackend
from serve_app.routing.registry import ModelRegistry, ServedModel
from serve_app.routing.replica_counts import (
    RecentReplicaCounts,
    ServeReplicaCounts,
    serve_details,
)

logger = logging.getLogger("ray.serve")


# Python's cycle collector runs its youngest generation after this many net allocations (the
# default is 700). At 700 it ran about 50 times a second in a loaded ingress, each time while
# many requests were in flight, so their objects were promoted to older generations and
# walked again by the full collections that followed: at 128 clients and in an open loop, about
# 0.1 ms per request in collections, and full collections of 20-90 ms that stalled every request
# in flight. At 10,000 the older generations are collected a few times a run, not hundreds.
GC_GEN0_THRESHOLD = 10_000


def collect_cycles_less_often() -> None:
    """Raise the youngest generation's threshold in this process (the ingress replica's)."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
@serve.ingress()
class Ingress:
    """Holds one `DeploymentHandle` per served model; the FastAPI app is built per replica."""

    def __init__(self, args: AppArgs, handles: dict[str, Any]) -> None:
        _check_policies(args)
        collect_cycles_less_often()
        self._args = args
        self._model_replica_counts = ServeReplicaCounts(serve.get_replica_context().app_name)
        # One background reader of the counts for the coalescer and the tenant limits.
        self._recent_replica_counts = RecentReplicaCounts(
            self._model_replica_counts, sorted({spec.deployment_name for spec in args.models})
        )
        coalescer = EmbeddingCoalescer(
            calls_by_replicas(self._recent_replica_counts, _ingress_replica_count)
        )
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
            behind_haproxy=_behind_our_haproxy(),
            model_replica_counts=self._model_replica_counts,
            recent_replica_counts=self._recent_replica_counts,
        )


def _check_policies(args: AppArgs) -> None:
    """Refuse to start (so the deploy fails, naming the field) where the autoscaling policy Serve
    applied to a model's deployment contradicts the model's `slo` or the deployment's
    `min_replicas`."""
    details = serve_details()
    if details is None:
        return
    app = details["applications"].get(serve.get_replica_context().app_name, {})
    check_deployed_policies(args, app.get("deployments", {}))


def _ingress_replica_count() -> int:
    """How many ingress replicas share the rate limits (each enforces its share)."""
    return max(1, serve.get_replica_context().world_size)


def _behind_our_haproxy() -> bool:
    """Whether requests reach this replica through HAProxy started as serve-inference-haproxy,
    which writes each client's address into a header; without it, HAProxy's own address is all
    the replica can know, and every client shares the per-address limits."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return False
    if is_wrapper(os.environ.get(BINARY_ENV)):
        return True
    logger.warning(
        "HAProxy runs without serve-inference-haproxy, so client addresses are unknown: "
        "per-address limits see every client as HAProxy. Set %s to the serve-inference-haproxy "
        "executable (make serve does).",
        BINARY_ENV,
    )
    return False
