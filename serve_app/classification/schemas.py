"""The shapes of POST /v1/classify: texts in, as for embeddings (route.py builds the answer)."""

from __future__ import annotations

from typing import ClassVar

from serve_app.protocol import MAX_INPUTS, TextsRequest


class ClassifyRequest(TextsRequest):
    max_inputs: ClassVar[int] = MAX_INPUTS
