"""POST /v1/classify: texts in; per text the label, its score and every label's score out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from deployments.classification_model import Classification

MAX_CLASSIFY_INPUTS = 2048


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(min_length=1, max_length=256)
    input: StrictStr | list[StrictStr]
    user: StrictStr | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _non_empty_inputs(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("'input' must not be an empty list")
        if len(texts) > MAX_CLASSIFY_INPUTS:
            raise ValueError(
                f"'input' has {len(texts)} items; at most {MAX_CLASSIFY_INPUTS} are allowed"
            )
        for index, text in enumerate(texts):
            if not text:
                where = "'input'" if isinstance(value, str) else f"'input[{index}]'"
                raise ValueError(f"{where} is an empty string; every input must have text")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


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
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
