"""OpenAI-compatible request and response shapes, validated with pydantic.

Requests forbid unknown fields, as OpenAI's API does ("Unrecognized request argument").
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

MAX_EMBEDDING_INPUTS = 2048


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextsRequest(_Request):
    """A request naming a model and one text or a list of texts (embeddings, classification)."""

    max_inputs: ClassVar[int] = MAX_EMBEDDING_INPUTS

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr]
    user: StrictStr | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _non_empty_inputs(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("'input' must not be an empty list")
        if len(texts) > cls.max_inputs:
            raise ValueError(
                f"'input' has {len(texts)} items; at most {cls.max_inputs} are allowed"
            )
        for index, text in enumerate(texts):
            if not text:
                where = "'input'" if isinstance(value, str) else f"'input[{index}]'"
                raise ValueError(f"{where} is an empty string; every input must have text")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingRequest(TextsRequest):
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
