"""Reranking through HTTP on one real Serve application: a tiny random-weight cross-encoder
(tests/support/tiny_models.py) answering plain HTTP and Cohere's v1 and v2 clients, with scores
compared to sentence-transformers' CrossEncoder.predict on the same weights in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cohere
import httpx
import numpy as np
import pytest
from ray import serve
from sentence_transformers import CrossEncoder

from serve_app.rerank.schemas import MAX_DOCUMENTS
from tests.integration.conftest import ServeCluster
from tests.support.fixtures_models import tiny_cross_encoder
from tests.support.serve_apps import delete_app, deploy

__all__ = ["tiny_cross_encoder"]

APP = "rerank-service"
PREFIX = "/rr"
MODEL = "tiny-reranker"
QUERY = "Which animal is quick?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests.",
    "word " * 300,  # truncated with the query to the model's 128 positions
    "Foxes are small omnivores of the dog family.",
    "A",
]


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster, tiny_cross_encoder: Path) -> Iterator[str]:
    config = {
        "name": APP,
        "route_prefix": PREFIX,
        "import_path": "serve_app.app:build_app",
        "args": {"models": [{"name": MODEL, "task": "rerank", "path": str(tiny_cross_encoder)}]},
        "deployments": [
            {"name": "Ingress", "ray_actor_options": {"num_cpus": 0.1}},
            {
                "name": MODEL,
                "ray_actor_options": {"num_cpus": 0.2},
                # A longer wait than the default, so concurrent requests surely meet in a batch.
                "user_config": {"batch_wait_timeout_s": 0.05},
            },
        ],
    }
    deploy(config)
    try:
        yield f"{serve_cluster.base_url}{PREFIX}"
    finally:
        delete_app(APP)


@pytest.fixture(scope="module")
def expected(tiny_cross_encoder: Path) -> tuple[np.ndarray, list[int]]:
    """CrossEncoder.predict's scores for (QUERY, each document), and each pair's tokens."""
    model = CrossEncoder(str(tiny_cross_encoder), device="cpu")
    pairs = [(QUERY, document) for document in DOCUMENTS]
    tokens = [
        len(model.tokenizer(QUERY, document, truncation=True, max_length=128)["input_ids"])
        for document in DOCUMENTS
    ]
    return model.predict(pairs), tokens


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=120)


def test_scores_equal_cross_encoder_predict_in_the_documented_shape(
    base_url: str, expected: tuple[np.ndarray, list[int]]
) -> None:
    scores, tokens = expected
    body = {
        "model": MODEL,
        "query": QUERY,
        "documents": [{"text": text} for text in DOCUMENTS],
        "top_n": 3,
        "return_documents": True,
    }
    response = post(f"{base_url}/v1/rerank", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == MODEL
    order = [int(index) for index in np.argsort(-scores, kind="stable")]
    assert [result["index"] for result in answer["results"]] == order[:3]
    for result in answer["results"]:
        assert result["relevance_score"] == pytest.approx(float(scores[result["index"]]), abs=1e-5)
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
    assert answer["usage"] == {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
    assert max(tokens) == 128


def test_cohere_v1_and_v2_clients(base_url: str, expected: tuple[np.ndarray, list[int]]) -> None:
    scores, _ = expected
    order = [int(index) for index in np.argsort(-scores, kind="stable")]
    v1 = cohere.Client(api_key="unused", base_url=base_url, timeout=120)
    answer = v1.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=2)
    assert [result.index for result in answer.results] == order[:2]
    assert answer.results[0].document is None  # return_documents defaults to false
    assert answer.meta is not None
    assert answer.meta.billed_units is not None
    assert answer.meta.billed_units.search_units == 1
    v2 = cohere.ClientV2(api_key="unused", base_url=base_url, timeout=120)
    answer2 = v2.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS)
    assert [result.index for result in answer2.results] == order
    got = [result.relevance_score for result in answer2.results]
    np.testing.assert_allclose(got, scores[order], atol=1e-5)


def test_the_most_documents_and_odd_texts_are_all_scored(base_url: str) -> None:
    odd = ["\u0000", "🦊 " * 50, "\ud7ff\ufeff", "x" * 5000, " ", "<|endoftext|>", "é\u0301"]
    documents = [odd[i % len(odd)] + str(i) for i in range(MAX_DOCUMENTS)]
    body = {"model": MODEL, "query": "\t", "documents": documents, "top_n": MAX_DOCUMENTS}
    response = post(f"{base_url}/v1/rerank", body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(result["index"] for result in results) == list(range(MAX_DOCUMENTS))
    scores = [result["relevance_score"] for result in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < score < 1.0 for score in scores)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"query": ""}, "query"),
        ({"documents": []}, "documents"),
        ({"documents": ["fine", ""]}, "documents"),
        ({"documents": ["d"] * (MAX_DOCUMENTS + 1)}, "documents"),
        ({"top_n": 0}, "top_n"),
        ({"max_tokens_per_doc": 64}, "max_tokens_per_doc"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_requests_get_a_clear_400(base_url: str, fields: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "query": QUERY, "documents": ["a"], **fields}
    response = post(f"{base_url}/v2/rerank", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_models_card_and_shared_passes(base_url: str) -> None:
    cards = {card["id"]: card for card in httpx.get(f"{base_url}/v1/models").json()["data"]}
    card = cards[MODEL]
    assert (card["task"], card["ready"], card["activation"]) == ("rerank", True, "Sigmoid")
    assert card["execution"] == "torchscript"
    handle = serve.get_deployment_handle(MODEL, app_name=APP)
    handle.reset_batch_sizes.remote().result()
    requests = 8

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{base_url}/rerank",
                        json={"model": MODEL, "query": f"q{i}", "documents": ["a", "b", "c"]},
                    )
                    for i in range(requests)
                )
            )

    responses = asyncio.run(burst())
    assert [response.status_code for response in responses] == [200] * requests
    sizes = handle.batch_sizes.remote().result()
    assert sum(sizes) == 3 * requests  # every pair scored once
    assert max(sizes) > 3, sizes  # pairs of different requests shared a pass
