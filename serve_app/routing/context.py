"""The steps every model route takes, shared by the task routers: read the body under the
request's deadline, resolve the model, and run the call on it (or its fallback) within the
deadline, noting which model answered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from serve_app.errors import Overloaded
from serve_app.gateway.body import parse_json_body
from serve_app.gateway.deadline import Deadline
from serve_app.gateway.rate_limit import TokenMeter
from serve_app.protocol import Task
from serve_app.routing.cache import CachedModels
from serve_app.routing.fair_shares import TENANT_SHARE, FairShares, ShareRefused
from serve_app.routing.fallback import FALLBACK_HEADER, FallbackRouter
from serve_app.routing.registry import ModelRegistry, ServedModel

ModelT = TypeVar("ModelT", bound=BaseModel)
Call = Callable[[ServedModel], Awaitable[Response]]


@dataclass(frozen=True)
class RouteContext:
    registry: ModelRegistry
    fallback: FallbackRouter
    cached: CachedModels
    max_request_body_bytes: int
    # Set when tenants are declared: model calls wait their tenant's turn.
    shares: FairShares | None = field(default=None)

    async def read(self, request: Request, schema: type[ModelT]) -> ModelT:
        """The body, read under the request's deadline (the gateway started it on arrival)."""
        deadline: Deadline = request.state.deadline
        return await deadline.read_body(
            parse_json_body(request, schema, self.max_request_body_bytes)
        )

    def resolve(self, name: str, task: Task) -> ServedModel:
        return self.registry.resolve(name, task)

    async def answer(
        self, request: Request, model: ServedModel, call: Call, cost: float = 1.0
    ) -> Response:
        """Run `call` within the request's deadline, on `model` or its fallback; with tenants,
        in the caller's turn on that model (`cost`: the request's inputs)."""
        deadline: Deadline = request.state.deadline
        if model.spec.slo is not None:
            # The gateway counts the answer against the requested model's objective.
            request.state.objective = (model.name, model.spec.slo.latency_ms / 1000)
        try:
            response, routed = await deadline.run(
                self.fallback.call(
                    model, self._in_turn(request, call, cost), arrived_s=deadline.started_s
                )
            )
        except Overloaded as refused:
            # The gateway counts the refusal by this reason (queue_full, predicted_miss).
            request.state.model, request.state.refusal = model.name, refused.reason
            raise
        request.state.model = routed.model.name
        if routed.fallback_reason is not None:
            response.headers[FALLBACK_HEADER] = model.name
            response.headers["x-fallback-reason"] = routed.fallback_reason
        return response

    def _in_turn(self, request: Request, call: Call, cost: float) -> Call:
        shares = self.shares
        if shares is None:
            return call
        tenant: str = request.state.caller.tenant

        async def in_turn(served: ServedModel) -> Response:
            try:
                slot = await shares.enter(served.name, tenant, cost)
            except ShareRefused:
                # What the metrics count the refusal under, unless a fallback answers.
                request.state.model, request.state.refusal = served.name, TENANT_SHARE
                raise
            try:
                response = await call(served)
            except BaseException:
                slot.release()
                raise
            # Held until the response has been sent: a stream keeps its place (its row in the
            # model's batch) until its last token, not only until its first.
            request.state.at_end.append(slot.release)
            return response

        return in_turn


def limits(request: Request) -> tuple[Deadline, TokenMeter]:
    """The request's deadline and token meter, both set by the gateway middleware."""
    return request.state.deadline, request.state.meter
