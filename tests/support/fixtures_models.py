"""Session-scoped tiny models on disk, built once per test run (import the fixtures you use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def direct(tiny_models: TinyModels) -> tuple[Any, Any]:
    """The tiny GPT-2 and its tokenizer, loaded plainly with transformers in this process: what
    the service's answers are compared with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_models.gpt2)).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_models.gpt2))
