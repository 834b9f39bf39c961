"""The ingress's custom metrics, exported through Ray's metrics pipeline (Prometheus).

Ray prefixes names with `ray_` and adds application, deployment and replica tags.
Created once per ingress replica, never at import time.
"""

from __future__ import annotations

from typing import Any

from ray.serve.metrics import Counter, Histogram


def _tags(*names: str) -> Any:
    """Ray's stubs type tag_keys as a 1-tuple; any tuple of names works."""
    return names


LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "inference_requests_total",
            description="Requests answered by the ingress, by model, route and HTTP status.",
            tag_keys=_tags("model", "route", "status"),
        )
        self.latency_s = Histogram(
            "inference_request_latency_s",
            description="End-to-end latency at the ingress, seconds.",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=_tags("model", "route"),
        )
        self.tenant_latency_s = Histogram(
            "inference_tenant_latency_s",
            description="End-to-end latency at the ingress by model and tenant, seconds.",
            boundaries=LATENCY_BOUNDARIES_S,
            tag_keys=_tags("model", "tenant"),
        )
        self.tokens = Counter(
            "inference_tokens_total",
            description="Tokens processed, by model and direction (in: prompt, out: generated).",
            tag_keys=_tags("model", "direction"),
        )
        self.cache = Counter(
            "inference_cache_total",
            description="Ingress cache lookups (embedding texts, rerank query-document pairs), "
            "by model and result (hit or miss).",
            tag_keys=_tags("model", "result"),
        )
        self.rejections = Counter(
            "inference_rejections_total",
            description="Requests refused, by model and reason (HTTP status, or why: "
            "tenant_share).",
            tag_keys=_tags("model", "reason"),
        )
        self.objective = Counter(
            "inference_objective_total",
            description="Answers (200) to requests for a model with an slo, by that model and "
            "whether they came within its latency_ms (result: met or missed). The rate of `met` "
            "is the goodput within the objective.",
            tag_keys=_tags("model", "result"),
        )
        self.fallbacks = Counter(
            "inference_fallbacks_total",
            description="Requests sent to a model's cheaper fallback instead of being refused.",
            tag_keys=_tags("model", "fallback", "reason"),
        )

    def observe_request(self, model: str, route: str, status: int, latency_s: float) -> None:
        self.requests.inc(tags={"model": model, "route": route, "status": str(status)})
        self.latency_s.observe(latency_s, tags={"model": model, "route": route})

    def observe_tenant(self, model: str, tenant: str, latency_s: float) -> None:
        self.tenant_latency_s.observe(latency_s, tags={"model": model, "tenant": tenant})

    def count_tokens(self, model: str, direction: str, count: int) -> None:
        if count > 0:
            self.tokens.inc(count, tags={"model": model, "direction": direction})

    def count_cache(self, model: str, hits: int, misses: int) -> None:
        if hits:
            self.cache.inc(hits, tags={"model": model, "result": "hit"})
        if misses:
            self.cache.inc(misses, tags={"model": model, "result": "miss"})

    def count_rejection(self, model: str, reason: str) -> None:
        self.rejections.inc(tags={"model": model, "reason": reason})

    def count_objective(self, model: str, met: bool) -> None:
        self.objective.inc(tags={"model": model, "result": "met" if met else "missed"})

    def count_fallback(self, model: str, fallback: str, reason: str) -> None:
        self.fallbacks.inc(tags={"model": model, "fallback": fallback, "reason": reason})
