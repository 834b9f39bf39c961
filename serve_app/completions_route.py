"""POST /v1/completions: prompts in, OpenAI `text_completion` objects (or their stream) out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from starlette.responses import Response

from deployments.generation_types import GenerationChunk, GenerationRequest, GenerationResult
from serve_app.body import json_response
from serve_app.deadline import Deadline
from serve_app.errors import InvalidRequest
from serve_app.generation_params import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    StreamEnvelope,
    check_supported,
    new_id,
    now_s,
    resolve_max_tokens,
    sampling,
    usage,
)
from serve_app.generation_schemas import CompletionRequest
from serve_app.generation_stream import open_generation_stream
from serve_app.rate_limit import TokenMeter
from serve_app.registry import ServedModel
from serve_app.sse import sse_response


async def complete(
    payload: CompletionRequest, model: ServedModel, deadline: Deadline, meter: TokenMeter
) -> Response:
    """The completion; its tokens are charged to `meter`, a stream's as they come."""
    check_supported(payload)
    prompts = payload.prompts()
    if payload.stream and len(prompts) > 1:
        raise InvalidRequest("Streaming takes one prompt; send one request each.", param="prompt")
    completion_id = new_id("cmpl")
    requests = generation_requests(payload, model, completion_id)
    if payload.stream:
        stream = model.backend.stream(requests[0])
        chunks = await open_generation_stream(stream, deadline, meter)
        return sse_response(stream_events(payload, model.name, completion_id, chunks))
    results = await asyncio.gather(*(model.backend.generate(r) for r in requests))
    meter.charge(sum(r.prompt_tokens + r.completion_tokens for r in results))
    return json_response(completion_body(model.name, completion_id, results))


def generation_requests(
    payload: CompletionRequest, model: ServedModel, completion_id: str
) -> list[GenerationRequest]:
    max_tokens, is_default = resolve_max_tokens(
        payload.max_tokens, model.spec, COMPLETIONS_DEFAULT_MAX_TOKENS
    )
    prompts = payload.prompts()
    ids = (
        [completion_id]
        if len(prompts) == 1
        else [f"{completion_id}-{i}" for i in range(len(prompts))]
    )
    return [
        GenerationRequest(
            request_id=request_id,
            prompt=prompt,
            max_tokens=max_tokens,
            max_tokens_is_default=is_default,
            sampling=sampling(payload),
            stop=payload.stop_sequences(),
        )
        for request_id, prompt in zip(ids, prompts, strict=True)
    ]


def completion_body(
    model_name: str, completion_id: str, results: list[GenerationResult]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": now_s(),
        "model": model_name,
        "choices": [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ],
        "usage": usage(
            sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
        ),
    }


async def stream_events(
    payload: CompletionRequest,
    model_name: str,
    completion_id: str,
    chunks: AsyncGenerator[GenerationChunk, None],
) -> AsyncGenerator[dict[str, Any], None]:
    envelope = StreamEnvelope("text_completion", completion_id, model_name)

    def event(text: str, finish_reason: str | None) -> dict[str, Any]:
        return envelope.choice(
            {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        )

    last: GenerationChunk | None = None
    async with aclosing(chunks):  # a closed stream (client gone) cancels the generation now
        async for chunk in chunks:
            last = chunk
            if chunk.text:
                yield event(chunk.text, None)
            if chunk.finish_reason is not None:
                yield event("", chunk.finish_reason)
    if last is not None and payload.stream_options and payload.stream_options.include_usage:
        yield envelope.usage(last)
