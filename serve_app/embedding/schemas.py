"""The shapes of POST /v1/embeddings: OpenAI's request (the response is built in route.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_app.protocol import TextsRequest


class EmbeddingRequest(TextsRequest):
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)
