"""POST /v1/rerank (also /v2/rerank and /rerank): a query and documents in; the documents by
relevance out, in the shape Cohere's v1 and v2 clients and Jina's API read."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments.contract import RelevanceScore
from serve_app.gateway.body import json_response, openapi_body
from serve_app.protocol import TASK_PATHS, usage
from serve_app.rerank.schemas import RerankRequest
from serve_app.routing.context import RouteContext, limits
from serve_app.routing.registry import ServedModel

# Cohere bills one search unit per query and up to 100 documents.
DOCUMENTS_PER_SEARCH_UNIT = 100


def rerank_response(
    model_name: str, request_id: str, payload: RerankRequest, scores: list[RelevanceScore]
) -> dict[str, Any]:
    """Documents by score, highest first (ties in input order), cut to `top_n`."""
    texts = payload.texts()
    order = sorted(range(len(scores)), key=lambda index: -scores[index].score)
    results: list[dict[str, Any]] = []
    for index in order[: payload.top_n]:
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index].score}
        if payload.return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    tokens = sum(score.tokens for score in scores)
    return {
        "id": request_id,
        "model": model_name,
        "results": results,
        "usage": usage(tokens),
        "meta": {
            "billed_units": {"search_units": math.ceil(len(texts) / DOCUMENTS_PER_SEARCH_UNIT)},
            "tokens": {"input_tokens": tokens},
        },
    }


def add_routes(api: FastAPI, context: RouteContext) -> None:
    """This task's routes on `api`, each one taking the steps of `context`."""

    async def rerank(request: Request) -> Response:
        payload = await context.read(request, RerankRequest)
        model = context.resolve(payload.model, "rerank")
        _, meter = limits(request)
        documents = payload.texts()

        async def call(served: ServedModel) -> Response:
            scores = await context.cached.rerank(served, payload.query, documents)
            meter.charge(sum(score.tokens for score in scores))
            body = rerank_response(served.name, request.state.request_id, payload, scores)
            return json_response(body)

        return await context.answer(request, model, call, cost=len(documents))

    for path in TASK_PATHS["rerank"]:
        api.add_api_route(path, rerank, methods=["POST"], openapi_extra=openapi_body(RerankRequest))
