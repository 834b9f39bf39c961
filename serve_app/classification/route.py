"""POST /v1/classify: texts in; per text the label, its score and every label's score out."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments.contract import Classification
from serve_app.classification.schemas import ClassifyRequest
from serve_app.gateway.body import json_response, openapi_body
from serve_app.protocol import usage
from serve_app.routing.context import RouteContext, limits
from serve_app.routing.registry import ServedModel


def classify_response(model_name: str, results: list[Classification]) -> dict[str, Any]:
    tokens = sum(result.tokens for result in results)
    return {
        "object": "list",
        "model": model_name,
        "data": [
            {
                "object": "classification",
                "index": index,
                "label": result.label,
                "score": result.score,
                "scores": result.scores,
            }
            for index, result in enumerate(results)
        ],
        "usage": usage(tokens),
    }


def add_routes(api: FastAPI, context: RouteContext) -> None:
    """This task's routes on `api`, each one taking the steps of `context`."""

    @api.post("/v1/classify", openapi_extra=openapi_body(ClassifyRequest))
    async def create_classification(request: Request) -> Response:
        payload = await context.read(request, ClassifyRequest)
        model = context.resolve(payload.model, "classification")
        _, meter = limits(request)

        async def call(served: ServedModel) -> Response:
            results = await served.backend.classify(payload.texts())
            meter.charge(sum(result.tokens for result in results))
            return json_response(classify_response(served.name, results))

        return await context.answer(request, model, call, cost=len(payload.texts()))
