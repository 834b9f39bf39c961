"""One ASGI middleware for what every request goes through: request id, client address, deadline,
API key, rate limit, the token meter and the per-request metrics. Pure ASGI: it adds no task or
copy per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import APIError, error_response
from serve_app.gateway.auth import Caller, FailedAuthLimit, KeyStore
from serve_app.gateway.client_address import ClientAddresses
from serve_app.gateway.deadline import TIMEOUT_HEADER, Deadline, timeout_from_header
from serve_app.gateway.rate_limit import RateLimiter, TokenMeter
from serve_app.metrics import IngressMetrics
from serve_app.protocol import TASK_PATHS

logger = logging.getLogger("ray.serve")

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PROTECTED_PREFIX = "/v1/"
# Metric labels name known routes only, so random paths cannot explode label cardinality.
KNOWN_ROUTES = frozenset({"/v1/models", *(path for paths in TASK_PATHS.values() for path in paths)})


def is_protected(path: str) -> bool:
    """`/v1/*` and every task route (some clients post outside /v1, e.g. Cohere's /v2/rerank)."""
    return path.startswith(PROTECTED_PREFIX) or path in KNOWN_ROUTES


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def route_path(scope: Scope) -> str:
    """The path the app routes on. Serve mounts an application at its route_prefix, and ASGI
    servers put that prefix both in `root_path` and at the start of `path` (Starlette's router
    strips it likewise); servers that strip it themselves leave `path` without it."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) :][:1] in ("", "/"):
        return path[len(root_path) :] or "/"
    return path


class GatewayMiddleware:
    """`/v1/*` and the task routes need a key when keys are configured; `/healthz`, `/readyz`
    and docs stay open.

    For those it leaves in `scope["state"]`: `deadline` (started at arrival), `caller`, `meter`
    (routes charge the tokens they use to it, streams while they run) and `at_end`, callables
    run once the response has been sent or the request has failed (what a route holds for the
    whole response, such as its tenant's slot). Routes report the model that answered as
    `model`, why a model refused as `refusal` (the metric's reason), and the requested model's
    objective as `objective` (name, seconds), which is met when the response starts within it:
    a whole answer, or a stream's first token.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        auth_limit: FailedAuthLimit,
        limiter: RateLimiter,
        addresses: ClientAddresses,
        request_timeout_s: float,
        metrics: IngressMetrics | None,
        echo_request_id: bool,
        tenant_latency: bool = False,
    ) -> None:
        self.app = app
        self.keys = keys
        self.auth_limit = auth_limit
        self.limiter = limiter
        self.addresses = addresses
        self.request_timeout_s = request_timeout_s
        self.metrics = metrics
        # Latency by tenant only where tenants are declared: otherwise it would repeat the
        # request histogram, one more observation per request.
        self.tenant_latency = tenant_latency
        # Serve's own proxy echoes x-request-id; outside Serve this middleware does.
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_s = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = _header(scope, REQUEST_ID_HEADER.encode())
        if request_id is None or not _SAFE_REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        state["request_id"] = request_id
        extra_headers: list[tuple[bytes, bytes]] = []
        if self.echo_request_id:
            extra_headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
        status = [500]
        response_started_s: list[float] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                response_started_s.append(time.perf_counter() - started_s)
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        path = route_path(scope)
        meter: TokenMeter | None = None
        try:
            if is_protected(path):
                state["deadline"] = Deadline.starting_now(
                    timeout_from_header(
                        _header(scope, TIMEOUT_HEADER.encode()), self.request_timeout_s
                    )
                )
                caller = self._caller(scope)
                state["caller"] = caller
                limit_headers = self.limiter.admit(caller.key_id)
                extra_headers += [(k.encode(), v.encode()) for k, v in limit_headers.items()]
                meter = state["meter"] = self.limiter.meter(caller.key_id)
                state["at_end"] = []
        except APIError as error:
            if self.metrics is not None:
                self.metrics.count_rejection("-", error.default_code or "refused")
            await error_response(error)(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)
        finally:
            for release in state.get("at_end", ()):
                release()
            took_s = time.perf_counter() - started_s
            self._after(
                path, state, meter, status[0], took_s, next(iter(response_started_s), took_s)
            )

    def _caller(self, scope: Scope) -> Caller:
        address = self.addresses.of(scope)
        if self.keys.enabled:
            return self.auth_limit.authenticate(
                self.keys, _header(scope, b"authorization"), address
            )
        return Caller(key_id=f"ip-{address}")

    def _after(
        self,
        path: str,
        state: dict[str, Any],
        meter: TokenMeter | None,
        status: int,
        took_s: float,
        response_started_s: float,
    ) -> None:
        if self.metrics is not None and is_protected(path):
            model = str(state.get("model", "-"))
            route = path if path in KNOWN_ROUTES else "other"
            self.metrics.observe_request(model, route, status, took_s)
            caller = state.get("caller")
            if self.tenant_latency and isinstance(caller, Caller):
                self.metrics.observe_tenant(model, caller.tenant, took_s)
            self.metrics.count_tokens(model, "in", meter.charged if meter is not None else 0)
            if status in (429, 503, 504):
                self.metrics.count_rejection(model, str(state.get("refusal", status)))
            objective: tuple[str, float] | None = state.get("objective")
            if objective is not None and status == 200:
                self.metrics.count_objective(objective[0], response_started_s <= objective[1])
