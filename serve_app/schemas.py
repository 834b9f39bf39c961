"""OpenAI-compatible request and response shapes, validated with pydantic.

Requests forbid unknown fields, as OpenAI's API does ("Unrecognized request argument").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

MAX_EMBEDDING_INPUTS = 2048


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Request):
    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    user: StrictStr | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _non_empty_inputs(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("'input' must not be an empty list")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(
                f"'input' has {len(texts)} items; at most {MAX_EMBEDDING_INPUTS} are allowed"
            )
        for index, text in enumerate(texts):
            if not text:
                where = "'input'" if isinstance(value, str) else f"'input[{index}]'"
                raise ValueError(f"{where} is an empty string; every input must have text")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
