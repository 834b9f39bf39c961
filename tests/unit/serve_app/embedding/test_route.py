"""The HTTP API over fake backends: shapes, order, usage and every error case, without Ray."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.embedding.route import from_base64
from serve_app.errors import Overloaded, ServiceUnavailable
from serve_app.protocol import MAX_INPUTS as MAX_EMBEDDING_INPUTS
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.fakes import FAKE_DIMENSIONS, FakeEmbeddingBackend, fake_vector

MODEL = "minilm"


def make_client(
    backend: FakeEmbeddingBackend | None = None,
    *,
    supports_dimensions: bool = False,
    max_body_bytes: int = 1024 * 1024,
    extra_models: list[ServedModel] | None = None,
) -> tuple[TestClient, FakeEmbeddingBackend]:
    backend = backend or FakeEmbeddingBackend()
    spec = ModelSpec(
        name=MODEL, task="embedding", path="/unused", supports_dimensions=supports_dimensions
    )
    models = [ServedModel(spec=spec, backend=backend), *(extra_models or [])]
    args = AppArgs(models=[m.spec for m in models], max_request_body_bytes=max_body_bytes)
    api = build_api(ModelRegistry(models), args)
    return TestClient(api, raise_server_exceptions=False), backend


def assert_openai_error(response: Any, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    if param is not None:
        assert body["error"]["param"] == param


def test_single_string_input() -> None:
    client, backend = make_client()
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "hello world"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    [item] = body["data"]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    assert item["embedding"] == pytest.approx(fake_vector("hello world").tolist())
    assert backend.calls == [["hello world"]]


def test_list_input_keeps_order_and_counts_every_token() -> None:
    client, _ = make_client()
    texts = [f"text number {i}" for i in range(50)]
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": texts})
    body = response.json()
    assert [item["index"] for item in body["data"]] == list(range(50))
    for text, item in zip(texts, body["data"], strict=True):
        assert item["embedding"] == pytest.approx(fake_vector(text).tolist())
    assert body["usage"]["prompt_tokens"] == 50 * 5


def test_base64_encoding_decodes_to_the_float_vector() -> None:
    client, _ = make_client()
    response = client.post(
        "/v1/embeddings", json={"model": MODEL, "input": ["a", "b"], "encoding_format": "base64"}
    )
    data = response.json()["data"]
    for text, item in zip(["a", "b"], data, strict=True):
        assert isinstance(item["embedding"], str)
        assert np.allclose(from_base64(item["embedding"]), fake_vector(text))


def test_dimensions_shortens_and_renormalizes_when_the_model_supports_it() -> None:
    client, _ = make_client(supports_dimensions=True)
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 3})
    vector = np.array(response.json()["data"][0]["embedding"])
    assert vector.shape == (3,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    expected = fake_vector("x")[:3]
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)


def test_dimensions_beyond_the_model_width_is_a_400() -> None:
    client, _ = make_client(supports_dimensions=True)
    response = client.post(
        "/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": FAKE_DIMENSIONS + 1}
    )
    assert_openai_error(response, 400, "invalid_request", param="dimensions")


def test_dimensions_on_a_fixed_width_model_is_a_400() -> None:
    client, backend = make_client()
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x", "dimensions": 4})
    assert_openai_error(response, 400, "invalid_request", param="dimensions")
    assert backend.calls == []


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": ["ok", ""]}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["ok", 3]}, "input"),
        ({"model": MODEL, "input": 42}, "input"),
        ({"model": MODEL, "input": None}, "input"),
        ({"model": MODEL, "input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)}, "input"),
        ({"model": MODEL}, "input"),
        ({"input": "x"}, "model"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": MODEL, "input": "x", "temperature": 1}, "temperature"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(payload: dict[str, Any], param: str) -> None:
    client, backend = make_client()
    response = client.post("/v1/embeddings", json=payload)
    assert_openai_error(response, 400, "invalid_request")
    assert (response.json()["error"]["param"] or "").split(".")[0] == param
    assert backend.calls == []


def test_the_maximum_input_count_is_accepted() -> None:
    client, _ = make_client()
    response = client.post(
        "/v1/embeddings", json={"model": MODEL, "input": ["x"] * MAX_EMBEDDING_INPUTS}
    )
    assert response.status_code == 200
    assert len(response.json()["data"]) == MAX_EMBEDDING_INPUTS


def test_empty_string_message_says_which_input() -> None:
    client, _ = make_client()
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": ["ok", ""]})
    assert "input[1]" in response.json()["error"]["message"]


def test_unknown_model_is_a_404_model_not_found() -> None:
    client, _ = make_client()
    response = client.post("/v1/embeddings", json={"model": "gpt-5", "input": "x"})
    assert_openai_error(response, 404, "model_not_found", param="model")
    assert MODEL in response.json()["error"]["message"]


def test_invalid_json_is_a_400() -> None:
    client, _ = make_client()
    response = client.post(
        "/v1/embeddings", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400, "invalid_request")


def test_json_that_is_not_an_object_is_a_400() -> None:
    client, _ = make_client()
    response = client.post("/v1/embeddings", json=["model", "input"])
    assert_openai_error(response, 400, "invalid_request")


def test_empty_body_is_a_400() -> None:
    client, _ = make_client()
    response = client.post("/v1/embeddings", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_request")


def test_non_json_content_type_is_a_415() -> None:
    client, _ = make_client()
    response = client.post(
        "/v1/embeddings", content=b"model=x", headers={"content-type": "text/plain"}
    )
    assert_openai_error(response, 415, "unsupported_media_type")


def test_oversized_body_is_a_413() -> None:
    client, backend = make_client(max_body_bytes=2048)
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x" * 4096})
    assert_openai_error(response, 413, "request_too_large")
    assert backend.calls == []


def test_overloaded_model_is_a_503_with_retry_after() -> None:
    client, _ = make_client(FakeEmbeddingBackend(error=Overloaded("busy", retry_after_s=2.5)))
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert_openai_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == "3"


def test_unavailable_model_is_a_503() -> None:
    client, _ = make_client(FakeEmbeddingBackend(error=ServiceUnavailable("gone")))
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert_openai_error(response, 503, "unavailable")
    assert "retry-after" in response.headers


def test_an_unexpected_failure_is_a_500_without_internals() -> None:
    secret = RuntimeError("/srv/secret/path.py line 12 exploded")
    client, _ = make_client(FakeEmbeddingBackend(error=secret))
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert_openai_error(response, 500, "internal_error")
    assert "secret" not in response.text


def test_unknown_route_is_an_openai_shaped_404() -> None:
    client, _ = make_client()
    assert_openai_error(client.get("/v1/nothing"), 404, "not_found")


def test_wrong_method_is_an_openai_shaped_405() -> None:
    client, _ = make_client()
    response = client.get("/v1/embeddings")
    assert response.status_code == 405
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_embedding_request_to_a_model_of_another_task_is_a_400() -> None:
    other = ServedModel(
        spec=ModelSpec(name="gen", task="generation", path="/unused"),
        backend=FakeEmbeddingBackend(),
    )
    client, _ = make_client(extra_models=[other])
    response = client.post("/v1/embeddings", json={"model": "gen", "input": "x"})
    assert_openai_error(response, 400, "wrong_model_task", param="model")


def test_models_lists_each_served_model() -> None:
    client, _ = make_client()
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == MODEL
    assert card["object"] == "model"
    assert card["task"] == "embedding"
    assert card["routes"] == ["/v1/embeddings"]
    assert card["ready"] is True
    assert card["dimensions"] == FAKE_DIMENSIONS


def test_readyz_waits_for_every_model() -> None:
    client, _ = make_client(FakeEmbeddingBackend(ready=False))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["waiting_for"] == [MODEL]
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["ready"] is False


def test_readyz_when_every_model_answers() -> None:
    client, _ = make_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "models": [MODEL], "scaled_to_zero": []}


def test_openapi_document_describes_the_embeddings_body() -> None:
    client, _ = make_client()
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/embeddings"]["post"]["requestBody"]
    assert "input" in body["content"]["application/json"]["schema"]["properties"]
