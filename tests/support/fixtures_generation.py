"""The tiny GPT-2 as the generation replica loads it, and plain greedy `generate` to check
against: shared by the tests of both batchers (import `model` with the names you use)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from deployments.contract import GenerationChunk, SamplingParams
from deployments.generation.model import GenerationModel
from deployments.loading.source import ModelSource
from tests.support.fixtures_models import TinyModels

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = ["The quick brown fox", "Hello", "Ray Serve batches requests from many clients"]


@pytest.fixture(scope="module")
def model(tiny_models: TinyModels) -> GenerationModel:
    return GenerationModel(ModelSource(path=str(tiny_models.gpt2), device="cpu"))


def direct_greedy(model: GenerationModel, prompt: str, max_tokens: int) -> tuple[str, int]:
    """Plain greedy `generate` on one prompt: its text and how many tokens it made."""
    encoded = model.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False)
    new = out[0, encoded["input_ids"].shape[1] :]
    return str(model.tokenizer.decode(new, skip_special_tokens=True)), len(new)


def text(chunks: Sequence[GenerationChunk]) -> str:
    """A streamed answer's text: its chunks joined."""
    return "".join(chunk.text for chunk in chunks)
