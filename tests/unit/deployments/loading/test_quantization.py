"""Agreement figures and the load-time check of a quantized model against its unquantized self."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from deployments.loading.quantization import (
    classification_agreement,
    embedding_agreement,
    load_checked,
    logits_agreement,
)
from deployments.loading.source import ModelSource


def test_embedding_agreement_is_cosine_per_probe() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    quantized = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    figures = embedding_agreement(reference, quantized)
    assert figures["mean_cosine"] == pytest.approx((1 + 0.5**0.5) / 2)
    assert figures["min_cosine"] == pytest.approx(0.5**0.5)


def test_logits_agreement_counts_same_top1_positions() -> None:
    reference = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.5]])
    quantized = torch.tensor([[2.5, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 0.5]])
    figures = logits_agreement(reference, quantized)
    assert figures["top1_agreement"] == pytest.approx(2 / 3)
    assert figures["positions"] == 3
    assert 0.9 < figures["mean_logit_cosine"] < 1.0


def test_classification_agreement_compares_labels_and_probabilities() -> None:
    reference = np.array([[0.9, 0.1], [0.4, 0.6]], dtype=np.float32)
    quantized = np.array([[0.8, 0.2], [0.55, 0.45]], dtype=np.float32)
    figures = classification_agreement(reference, quantized)
    assert figures["label_agreement"] == 0.5
    assert figures["max_prob_diff"] == pytest.approx(0.15)


@dataclass
class FakeModel:
    source: ModelSource
    dtype: torch.dtype = torch.float32


SOURCE = ModelSource(path="/unused", quantization="nf4")


def test_unquantized_models_load_once_without_a_check() -> None:
    built: list[str] = []

    def build(source: ModelSource) -> FakeModel:
        built.append(source.quantization)
        return FakeModel(source)

    checked = load_checked(
        SOURCE.model_copy(update={"quantization": "none"}),
        build,
        probe=lambda m, texts: pytest.fail("no probe without quantization"),
        compare=lambda a, b: pytest.fail("no compare without quantization"),
    )
    assert built == ["none"]
    assert checked.agreement is None


def test_reference_is_measured_and_freed_before_the_quantized_load() -> None:
    events: list[str] = []

    def build(source: ModelSource) -> FakeModel:
        events.append(f"build {source.quantization}")
        return FakeModel(source)

    def probe(model: FakeModel, texts: tuple[str, ...]) -> list[float]:
        events.append(f"probe {model.source.quantization} x{len(texts)}")
        return [1.0] * len(texts) if model.source.quantization == "none" else [0.5] * len(texts)

    def compare(reference: list[float], quantized: list[float]) -> dict[str, float]:
        return {"ratio": sum(quantized) / sum(reference)}

    checked = load_checked(SOURCE, build, probe, compare, probes=("a", "b", "c"))
    assert events == ["build none", "probe none x3", "build nf4", "probe nf4 x3"]
    assert checked.model.source.quantization == "nf4"
    assert checked.agreement is not None
    assert checked.agreement.as_dict() == {
        "quantization": "nf4",
        "reference_dtype": "float32",
        "probes": 3,
        "ratio": 0.5,
    }
