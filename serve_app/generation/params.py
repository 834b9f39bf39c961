"""From an OpenAI request body to the replica's GenerationRequest: limits, options, ids."""

from __future__ import annotations

import time
import uuid
from typing import Any

from deployments.contract import GenerationChunk, SamplingParams
from serve_app.config import ModelSpec
from serve_app.errors import InvalidRequest
from serve_app.generation.schemas import ChatCompletionRequest, CompletionRequest
from serve_app.protocol import usage

# OpenAI's documented default for /v1/completions; chat defaults to the model's limit instead.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def check_supported(payload: CompletionRequest | ChatCompletionRequest) -> None:
    """400 for options the service accepts in the schema but cannot honour."""
    top_logprobs = getattr(payload, "top_logprobs", None)  # chat only
    if top_logprobs is not None and not payload.logprobs:
        raise InvalidRequest("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(payload, name) != 0.0:
            raise InvalidRequest(f"'{name}' other than 0 is not supported.", param=name)


def resolve_max_tokens(requested: int | None, spec: ModelSpec, default: int) -> tuple[int, bool]:
    """The completion budget and whether it is the server's default (then cut to fit context)."""
    if requested is None:
        return min(default, spec.max_output_tokens), True
    if requested > spec.max_output_tokens:
        raise InvalidRequest(
            f"'max_tokens' is {requested}; the model '{spec.name}' allows at most "
            f"{spec.max_output_tokens}.",
            param="max_tokens",
        )
    return requested, False


def sampling(payload: CompletionRequest | ChatCompletionRequest) -> SamplingParams:
    return SamplingParams(temperature=payload.temperature, top_p=payload.top_p, seed=payload.seed)


class StreamEnvelope:
    """What every chunk of one stream shares: id, object, creation time and model."""

    def __init__(self, object_name: str, completion_id: str, model_name: str) -> None:
        self._head = {
            "id": completion_id,
            "object": object_name,
            "created": now_s(),
            "model": model_name,
        }

    def choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {**self._head, "choices": [choice]}

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The closing chunk for `stream_options.include_usage`: no choices, the whole usage."""
        return {
            **self._head,
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }


class ChoiceCounts:
    """Tokens so far of one prompt's streamed choices: the prompt once, each choice's
    completion (a chunk carries its own choice's running count)."""

    def __init__(self) -> None:
        self._prompt_tokens = 0
        self._completion_tokens: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self._completion_tokens)

    def add(self, chunk: GenerationChunk) -> None:
        self._prompt_tokens = chunk.prompt_tokens
        self._completion_tokens[chunk.index] = chunk.completion_tokens

    def usage(self) -> tuple[int, int]:
        return self._prompt_tokens, sum(self._completion_tokens.values())

    def used(self) -> int:
        prompt_tokens, completion_tokens = self.usage()
        return prompt_tokens + completion_tokens
