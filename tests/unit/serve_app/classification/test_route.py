"""The sequence classifier (equal to running the model directly) and POST /v1/classify."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from deployments.classification.model import ClassificationModel
from deployments.contract import Classification
from deployments.loading.source import ModelSource
from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.fixtures_models import TinyModels, tiny_models
from tests.support.tiny_models import CLASS_LABELS

__all__ = ["tiny_models"]

TEXTS = ["I love this!", "This is terrible.", "It is fine, I guess.", "word " * 500]


@pytest.fixture(scope="module")
def classifier(tiny_models: TinyModels) -> ClassificationModel:
    return ClassificationModel(ModelSource(path=str(tiny_models.classifier), device="cpu"))


def test_scores_equal_the_model_run_directly(
    classifier: ClassificationModel, tiny_models: TinyModels
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.classifier))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_models.classifier))
    with torch.inference_mode():
        encoded = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
        expected = model(**encoded).logits.softmax(dim=-1).numpy()
    results = classifier.classify(TEXTS)
    for row, result in zip(expected, results, strict=True):
        assert list(result.scores) == list(CLASS_LABELS)
        assert np.allclose(list(result.scores.values()), row, atol=1e-5)
        assert result.label == CLASS_LABELS[int(row.argmax())]
        assert result.score == pytest.approx(float(row.max()), abs=1e-5)
    assert results[3].tokens == 128  # truncated to the model's 128 positions
    assert results[0].tokens == len(tokenizer("I love this!")["input_ids"])


def test_describe_names_labels_and_placement(classifier: ClassificationModel) -> None:
    card = classifier.describe()
    assert card["labels"] == list(CLASS_LABELS)
    assert card["max_input_tokens"] == 128
    assert (card["device"], card["dtype"], card["quantization"]) == ("cpu", "float32", "none")
    assert card["execution"] == "torchscript"  # auto on CPU; the scores above are the trace's
    assert card["parameters"] == sum(p.numel() for p in classifier.model.parameters())


class FakeClassifier:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def classify(self, texts: list[str]) -> list[Classification]:
        self.calls.append(texts)
        return [
            Classification("positive", 0.75, {"negative": 0.25, "positive": 0.75}, len(t.split()))
            for t in texts
        ]

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        return {"task": "classification"}


def make_client() -> tuple[TestClient, FakeClassifier]:
    backend = FakeClassifier()
    spec = ModelSpec(name="sentiment", task="classification", path="/unused")
    api = build_api(ModelRegistry([ServedModel(spec, backend)]), AppArgs(models=[spec]))
    return TestClient(api, raise_server_exceptions=False), backend


def test_classify_response_shape() -> None:
    client, backend = make_client()
    response = client.post("/v1/classify", json={"model": "sentiment", "input": ["a b", "c"]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == "sentiment"
    assert body["data"][1] == {
        "object": "classification",
        "index": 1,
        "label": "positive",
        "score": 0.75,
        "scores": {"negative": 0.25, "positive": 0.75},
    }
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert backend.calls == [["a b", "c"]]
    single = client.post("/v1/classify", json={"model": "sentiment", "input": "one"}).json()
    assert len(single["data"]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "sentiment", "input": []}, 400),
        ({"model": "sentiment", "input": ["ok", ""]}, 400),
        ({"model": "sentiment", "input": ["x"] * 2049}, 400),
        ({"model": "sentiment", "input": 5}, 400),
        ({"model": "sentiment", "input": "x", "top_k": 2}, 400),
        ({"model": "nope", "input": "x"}, 404),
    ],
)
def test_bad_classify_requests(body: dict[str, Any], status: int) -> None:
    client, backend = make_client()
    response = client.post("/v1/classify", json=body)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert backend.calls == []
