"""POST /v1/completions (prompts in, OpenAI `text_completion` objects or their stream out) and
POST /v1/chat/completions (messages in, `chat.completion` objects or chunks out).

The replica renders the messages with the tokenizer's chat template, or the plain template in
deployments/generation/chat_prompt.py when the tokenizer has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments.contract import (
    ChatMessage,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
)
from serve_app.errors import InvalidRequest
from serve_app.gateway.body import json_response, openapi_body
from serve_app.gateway.deadline import Deadline
from serve_app.gateway.rate_limit import TokenMeter
from serve_app.generation.logprobs import CompletionLogprobs, chat_logprobs
from serve_app.generation.params import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    ChoiceCounts,
    StreamEnvelope,
    check_supported,
    new_id,
    now_s,
    resolve_max_tokens,
    sampling,
)
from serve_app.generation.schemas import ChatCompletionRequest, CompletionRequest
from serve_app.generation.stream import open_generation_stream, sse_response
from serve_app.protocol import usage
from serve_app.routing.context import RouteContext, limits
from serve_app.routing.registry import ServedModel


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
        return sse_response(completion_stream_events(payload, model.name, completion_id, chunks))
    answers = await asyncio.gather(*(model.backend.generate(r) for r in requests))
    prompt_tokens, completion_tokens = counted(answers)
    meter.charge(prompt_tokens + completion_tokens)
    return json_response(completion_body(payload, model.name, completion_id, answers))


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
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=None if isinstance(prompt, str) else tuple(prompt),
            max_tokens=max_tokens,
            max_tokens_is_default=is_default,
            sampling=sampling(payload),
            stop=payload.stop_sequences(),
            n=payload.n,
            logprobs=payload.logprobs,
            echo=payload.echo,
        )
        for request_id, prompt in zip(ids, prompts, strict=True)
    ]


def counted(answers: Sequence[Sequence[GenerationResult]]) -> tuple[int, int]:
    """Usage of several prompts' choices: each prompt once, every choice's completion."""
    prompt_tokens = sum(choices[0].prompt_tokens for choices in answers)
    completion_tokens = sum(r.completion_tokens for choices in answers for r in choices)
    return prompt_tokens, completion_tokens


def completion_body(
    payload: CompletionRequest,
    model_name: str,
    completion_id: str,
    answers: list[list[GenerationResult]],
) -> dict[str, Any]:
    # OpenAI's order: the n choices of the first prompt, then the second prompt's, and so on.
    results = [result for choices in answers for result in choices]
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": now_s(),
        "model": model_name,
        "choices": [
            {
                "index": i,
                "text": r.text,
                "logprobs": (
                    CompletionLogprobs().render(r.logprobs)
                    if payload.logprobs is not None
                    else None
                ),
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(results)
        ],
        "usage": usage(*counted(answers)),
    }


async def completion_stream_events(
    payload: CompletionRequest,
    model_name: str,
    completion_id: str,
    chunks: AsyncGenerator[GenerationChunk, None],
) -> AsyncGenerator[dict[str, Any], None]:
    envelope = StreamEnvelope("text_completion", completion_id, model_name)
    offsets = [CompletionLogprobs() for _ in range(payload.n)]

    def event(chunk: GenerationChunk, text: str, finish_reason: str | None) -> dict[str, Any]:
        logprobs = None
        if payload.logprobs is not None:
            logprobs = offsets[chunk.index].render(chunk.logprobs if finish_reason is None else ())
        return envelope.choice(
            {
                "index": chunk.index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        )

    counts = ChoiceCounts()
    async with aclosing(chunks):  # a closed stream (client gone) cancels the generation now
        async for chunk in chunks:
            counts.add(chunk)
            if chunk.text or chunk.logprobs:
                yield event(chunk, chunk.text, None)
            if chunk.finish_reason is not None:
                yield event(chunk, "", chunk.finish_reason)
    if counts and payload.stream_options and payload.stream_options.include_usage:
        yield envelope.usage(*counts.usage())


async def chat(
    payload: ChatCompletionRequest, model: ServedModel, deadline: Deadline, meter: TokenMeter
) -> Response:
    """The chat completion; its tokens are charged to `meter`, a stream's as they come."""
    check_supported(payload)
    completion_id = new_id("chatcmpl")
    request = generation_request(payload, model, completion_id)
    if payload.stream:
        stream = model.backend.stream(request)
        chunks = await open_generation_stream(stream, deadline, meter)
        return sse_response(chat_stream_events(payload, model.name, completion_id, chunks))
    results = await model.backend.generate(request)
    prompt_tokens, completion_tokens = counted([results])
    meter.charge(prompt_tokens + completion_tokens)
    return json_response(chat_body(payload, model.name, completion_id, results))


def generation_request(
    payload: ChatCompletionRequest, model: ServedModel, completion_id: str
) -> GenerationRequest:
    max_tokens, is_default = resolve_max_tokens(
        payload.requested_max_tokens(), model.spec, model.spec.max_output_tokens
    )
    return GenerationRequest(
        request_id=completion_id,
        messages=tuple(ChatMessage(role=m.role, content=m.text()) for m in payload.messages),
        max_tokens=max_tokens,
        max_tokens_is_default=is_default,
        sampling=sampling(payload),
        stop=payload.stop_sequences(),
        n=payload.n,
        logprobs=(payload.top_logprobs or 0) if payload.logprobs else None,
    )


def chat_body(
    payload: ChatCompletionRequest,
    model_name: str,
    completion_id: str,
    results: list[GenerationResult],
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": now_s(),
        "model": model_name,
        "choices": [
            {
                "index": r.index,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": chat_logprobs(r.logprobs) if payload.logprobs else None,
                "finish_reason": r.finish_reason,
            }
            for r in results
        ],
        "usage": usage(*counted([results])),
    }


async def chat_stream_events(
    payload: ChatCompletionRequest,
    model_name: str,
    completion_id: str,
    chunks: AsyncGenerator[GenerationChunk, None],
) -> AsyncGenerator[dict[str, Any], None]:
    envelope = StreamEnvelope("chat.completion.chunk", completion_id, model_name)

    def event(
        index: int, delta: dict[str, str], logprobs: Any, finish_reason: str | None
    ) -> dict[str, Any]:
        return envelope.choice(
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        )

    counts = ChoiceCounts()
    async with aclosing(chunks):  # a closed stream (client gone) cancels the generation now
        for index in range(payload.n):
            yield event(index, {"role": "assistant", "content": ""}, None, None)
        async for chunk in chunks:
            counts.add(chunk)
            if chunk.text or chunk.logprobs:
                logprobs = chat_logprobs(chunk.logprobs) if payload.logprobs else None
                yield event(chunk.index, {"content": chunk.text}, logprobs, None)
            if chunk.finish_reason is not None:
                yield event(chunk.index, {}, None, chunk.finish_reason)
    if counts and payload.stream_options and payload.stream_options.include_usage:
        yield envelope.usage(*counts.usage())


def add_routes(api: FastAPI, context: RouteContext) -> None:
    """This task's routes on `api`, each one taking the steps of `context`."""

    @api.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest))
    async def create_completion(request: Request) -> Response:
        payload = await context.read(request, CompletionRequest)
        model = context.resolve(payload.model, "generation")
        deadline, meter = limits(request)
        return await context.answer(
            request, model, lambda served: complete(payload, served, deadline, meter)
        )

    @api.post("/v1/chat/completions", openapi_extra=openapi_body(ChatCompletionRequest))
    async def create_chat_completion(request: Request) -> Response:
        payload = await context.read(request, ChatCompletionRequest)
        model = context.resolve(payload.model, "generation")
        deadline, meter = limits(request)
        return await context.answer(
            request, model, lambda served: chat(payload, served, deadline, meter)
        )
