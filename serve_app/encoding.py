"""Embedding vectors as JSON floats or as OpenAI's base64 (little-endian float32) strings."""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt


def to_base64(vector: npt.NDArray[np.floating]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
