"""Session-scoped tiny models on disk, built once per test run (import the fixtures you use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tiny_models import (
    build_tiny_bert_classifier,
    build_tiny_cross_encoder,
    build_tiny_gpt2,
)


@dataclass(frozen=True)
class TinyModels:
    gpt2: Path  # with a chat template
    gpt2_plain: Path  # same weights, no chat template: the service's plain template applies
    classifier: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny-models")
    return TinyModels(
        gpt2=build_tiny_gpt2(root / "gpt2"),
        gpt2_plain=build_tiny_gpt2(root / "gpt2-plain", chat_template=False),
        classifier=build_tiny_bert_classifier(root / "classifier"),
    )


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-label BERT cross-encoder (rerank), built once per test run."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-models") / "cross-encoder")
