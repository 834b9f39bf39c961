"""The HTTP shapes every task shares: the strict request base, a texts request, `usage`.

Requests forbid unknown fields, as OpenAI's API does ("Unrecognized request argument").
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

Task = Literal["embedding", "generation", "classification", "rerank"]
# The tasks a model can serve and the routes that answer each: the one list the config, the task
# routers, the routing errors and the metrics derive from.
TASK_PATHS: dict[Task, tuple[str, ...]] = {
    "embedding": ("/v1/embeddings",),
    "generation": ("/v1/completions", "/v1/chat/completions"),
    "classification": ("/v1/classify",),
    # Cohere's v1 client posts to /v1/rerank, its ClientV2 to /v2/rerank; Jina uses /v1/rerank.
    "rerank": ("/v1/rerank", "/v2/rerank", "/rerank"),
}

# Inputs one embedding or classification request may carry.
MAX_INPUTS = 2048


class StrictRequest(BaseModel):
    """Unknown fields are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid")


class ModelRequest(StrictRequest):
    """A request naming a model, with OpenAI's optional end-user id."""

    model: StrictStr = Field(min_length=1, max_length=256)
    user: StrictStr | None = Field(default=None, max_length=256)


class TextsRequest(ModelRequest):
    """A request naming a model and one text or a list of texts (embeddings, classification)."""

    max_inputs: ClassVar[int] = MAX_INPUTS

    input: StrictStr | list[StrictStr]

    @field_validator("input")
    @classmethod
    def _non_empty_inputs(cls, value: str | list[str]) -> str | list[str]:
        check_texts(value, cls.max_inputs)
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def check_input_count(count: int, max_inputs: int = MAX_INPUTS) -> None:
    """Refuse an empty list of inputs, or more than `max_inputs` of them."""
    if not count:
        raise ValueError("'input' must not be an empty list")
    if count > max_inputs:
        raise ValueError(f"'input' has {count} items; at most {max_inputs} are allowed")


def check_texts(value: str | list[str], max_inputs: int = MAX_INPUTS) -> None:
    """Refuse what `check_input_count` refuses, and empty strings, naming the input."""
    texts = [value] if isinstance(value, str) else value
    check_input_count(len(texts), max_inputs)
    for index, text in enumerate(texts):
        if not text:
            where = "'input'" if isinstance(value, str) else f"'input[{index}]'"
            raise ValueError(f"{where} is an empty string; every input must have text")


def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict[str, int]:
    """OpenAI's `usage` object: input tokens only (embeddings, classification), or with the
    completion's tokens (generation)."""
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
