"""POST /v1/classify: texts in; per text the label, its score and every label's score out."""

from __future__ import annotations

from typing import Any, ClassVar

from deployments.classification_model import Classification
from serve_app.schemas import TextsRequest

MAX_CLASSIFY_INPUTS = 2048


class ClassifyRequest(TextsRequest):
    max_inputs: ClassVar[int] = MAX_CLASSIFY_INPUTS


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
