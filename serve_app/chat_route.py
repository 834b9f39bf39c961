"""POST /v1/chat/completions: messages in, OpenAI `chat.completion` objects (or chunks) out.

The replica renders the messages with the tokenizer's chat template, or the plain template in
deployments/chat_prompt.py when the tokenizer has none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from starlette.responses import Response

from deployments.generation_types import (
    ChatMessage,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
)
from serve_app.body import json_response
from serve_app.deadline import Deadline
from serve_app.generation_params import (
    StreamEnvelope,
    check_supported,
    new_id,
    now_s,
    resolve_max_tokens,
    sampling,
    usage,
)
from serve_app.generation_schemas import ChatCompletionRequest
from serve_app.generation_stream import open_generation_stream
from serve_app.rate_limit import TokenMeter
from serve_app.registry import ServedModel
from serve_app.sse import sse_response


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
        return sse_response(stream_events(payload, model.name, completion_id, chunks))
    result = await model.backend.generate(request)
    meter.charge(result.prompt_tokens + result.completion_tokens)
    return json_response(chat_body(model.name, completion_id, result))


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
    )


def chat_body(model_name: str, completion_id: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": now_s(),
        "model": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage(result.prompt_tokens, result.completion_tokens),
    }


async def stream_events(
    payload: ChatCompletionRequest,
    model_name: str,
    completion_id: str,
    chunks: AsyncGenerator[GenerationChunk, None],
) -> AsyncGenerator[dict[str, Any], None]:
    envelope = StreamEnvelope("chat.completion.chunk", completion_id, model_name)

    def event(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return envelope.choice(
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        )

    last: GenerationChunk | None = None
    async with aclosing(chunks):  # a closed stream (client gone) cancels the generation now
        yield event({"role": "assistant", "content": ""}, None)
        async for chunk in chunks:
            last = chunk
            if chunk.text:
                yield event({"content": chunk.text}, None)
            if chunk.finish_reason is not None:
                yield event({}, chunk.finish_reason)
    if last is not None and payload.stream_options and payload.stream_options.include_usage:
        yield envelope.usage(last)
