"""The cross-encoder: scores equal to sentence-transformers' CrossEncoder.predict on the same
weights, truncation, the activation its config names, and the quantized load's check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from deployments.loading.quantization import relevance_agreement
from deployments.loading.source import ModelSource
from deployments.rerank.model import RerankModel, load
from tests.support.fixtures_models import TinyModels, tiny_cross_encoder, tiny_models
from tests.support.tiny_models import build_tiny_cross_encoder

__all__ = ["tiny_cross_encoder", "tiny_models"]

QUERY = "Which animal is quick?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests.",
    "word " * 500,  # past the model's 128 positions: truncated with the query
    "A",
    "Foxes are small omnivores of the dog family, found on every continent but Antarctica.",
]
PAIRS = [(QUERY, document) for document in DOCUMENTS]


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder: Path) -> RerankModel:
    return RerankModel(ModelSource(path=str(tiny_cross_encoder), device="cpu"))


@pytest.fixture(scope="module")
def cross_encoder(tiny_cross_encoder: Path) -> CrossEncoder:
    model: CrossEncoder = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    return model


def test_scores_equal_cross_encoder_predict(
    reranker: RerankModel, cross_encoder: CrossEncoder
) -> None:
    expected = cross_encoder.predict(PAIRS)
    scores, tokens = reranker.scores(PAIRS)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert ((scores > 0) & (scores < 1)).all()  # the sigmoid CrossEncoder applies for 1 label
    assert len(set(np.round(scores, 4).tolist())) == len(DOCUMENTS)  # a real ordering to test
    assert tokens[2] == 128  # the long pair, truncated to the model's 128 positions
    encoded = cross_encoder.tokenizer(QUERY, DOCUMENTS[3])
    assert tokens[3] == len(encoded["input_ids"])


def test_rerank_gives_a_score_and_token_count_per_pair(reranker: RerankModel) -> None:
    scores, tokens = reranker.scores(PAIRS)
    results = reranker.rerank(PAIRS)
    assert [r.score for r in results] == pytest.approx(scores.tolist())
    assert [r.tokens for r in results] == tokens


def test_max_input_tokens_truncates_each_pair(
    tiny_cross_encoder: Path, cross_encoder: CrossEncoder
) -> None:
    short = RerankModel(ModelSource(path=str(tiny_cross_encoder), device="cpu"), 16)
    scores, tokens = short.scores(PAIRS)
    assert max(tokens) == 16
    cross_encoder_16 = CrossEncoder(str(tiny_cross_encoder), device="cpu", max_length=16)
    np.testing.assert_allclose(scores, cross_encoder_16.predict(PAIRS), atol=1e-5)


def test_grouped_passes_equal_one_pass(tiny_cross_encoder: Path) -> None:
    one_pass = RerankModel(
        ModelSource(path=str(tiny_cross_encoder), device="cpu", length_grouping="off")
    )
    grouped = RerankModel(
        ModelSource(path=str(tiny_cross_encoder), device="cpu", length_grouping=1)
    )
    expected, expected_tokens = one_pass.scores(PAIRS)
    got, got_tokens = grouped.scores(PAIRS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got_tokens == expected_tokens


def test_describe_names_activation_and_placement(reranker: RerankModel) -> None:
    card = reranker.describe()
    assert card["activation"] == "Sigmoid"
    assert card["max_input_tokens"] == 128
    assert (card["device"], card["dtype"], card["quantization"]) == ("cpu", "float32", "none")
    assert card["execution"] == "torchscript"  # auto on CPU; the scores above are the trace's


def _with_config(directory: Path, **entries: object) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **entries}))
    return directory


def test_the_activation_saved_with_the_model_applies(tmp_path: Path) -> None:
    directory = _with_config(
        build_tiny_cross_encoder(tmp_path / "identity"),
        sentence_transformers={"activation_fn": "torch.nn.modules.linear.Identity"},
    )
    model = RerankModel(ModelSource(path=str(directory), device="cpu"))
    assert model.activation == "Identity"
    expected = CrossEncoder(str(directory), device="cpu").predict(PAIRS)
    np.testing.assert_allclose(model.scores(PAIRS)[0], expected, atol=1e-5)


def test_an_unknown_torch_activation_is_refused(tmp_path: Path) -> None:
    directory = _with_config(
        build_tiny_cross_encoder(tmp_path / "softplus"),
        sentence_transformers={"activation_fn": "torch.nn.modules.activation.Softplus"},
    )
    with pytest.raises(ValueError, match="Softplus; rerank supports Identity, Sigmoid, Tanh"):
        RerankModel(ModelSource(path=str(directory), device="cpu"))


def test_a_model_with_several_labels_is_refused(tiny_models: TinyModels) -> None:
    with pytest.raises(ValueError, match="3 output labels; a rerank model is a cross-encoder"):
        RerankModel(ModelSource(path=str(tiny_models.classifier), device="cpu"))


def test_int8_load_is_checked_against_full_precision(tiny_cross_encoder: Path) -> None:
    checked = load(ModelSource(path=str(tiny_cross_encoder), device="cpu", quantization="int8"))
    assert checked.agreement is not None
    figures = checked.agreement.as_dict()
    assert figures["quantization"] == "int8"
    assert figures["max_score_diff"] < 0.05
    assert checked.model.execution == "eager"  # bitsandbytes layers are not traced


def test_relevance_agreement_compares_best_document_order_and_gap() -> None:
    reference = np.array([0.9, 0.2, 0.5], dtype=np.float32)
    same = relevance_agreement(reference, np.array([0.8, 0.1, 0.45], dtype=np.float32))
    assert same == pytest.approx({"top1_agreement": 1.0, "same_order": 1.0, "max_score_diff": 0.1})
    swapped = relevance_agreement(reference, np.array([0.9, 0.6, 0.5], dtype=np.float32))
    assert swapped["top1_agreement"] == 1.0
    assert swapped["same_order"] == 0.0
    assert swapped["max_score_diff"] == pytest.approx(0.4)
