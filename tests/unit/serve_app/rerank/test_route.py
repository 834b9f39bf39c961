"""POST /v1/rerank (and /v2/rerank, /rerank) over a fake cross-encoder: the answer's shape,
order and cut, what Cohere's clients parse, the refusals, the token charge and the fallback."""

from __future__ import annotations

from typing import Any

import cohere
import httpx
import pytest
from fastapi.testclient import TestClient

from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.errors import Overloaded
from serve_app.gateway.config import GatewayConfig, RateLimitConfig
from serve_app.rerank.schemas import MAX_DOCUMENTS
from serve_app.routing.fallback import FALLBACK_HEADER
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.fakes import FakeRerankBackend

QUERY = "which pet barks"
DOCUMENTS = ["a cat", "a dog barks", "the sea", "a fox", "bread"]


def expected_order(query: str = QUERY, documents: list[str] = DOCUMENTS) -> list[int]:
    scores = [FakeRerankBackend.score(query, document).score for document in documents]
    return sorted(range(len(documents)), key=lambda index: -scores[index])


def make_client(
    backend: FakeRerankBackend | None = None, **args: Any
) -> tuple[TestClient, FakeRerankBackend]:
    backend = backend or FakeRerankBackend()
    spec = ModelSpec(name="ranker", task="rerank", path="/unused")
    api = build_api(ModelRegistry([ServedModel(spec, backend)]), AppArgs(models=[spec], **args))
    return TestClient(api, raise_server_exceptions=False), backend


def test_results_are_sorted_by_score_and_carry_usage_and_meta() -> None:
    client, backend = make_client()
    response = client.post(
        "/v1/rerank", json={"model": "ranker", "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "ranker"
    assert body["id"] == response.headers["x-request-id"]
    order = expected_order()
    assert [result["index"] for result in body["results"]] == order
    scores = [result["relevance_score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(FakeRerankBackend.score(QUERY, DOCUMENTS[order[0]]).score)
    assert all("document" not in result for result in body["results"])  # Cohere's default
    tokens = sum(FakeRerankBackend.score(QUERY, d).tokens for d in DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["meta"] == {"billed_units": {"search_units": 1}, "tokens": {"input_tokens": tokens}}
    assert backend.calls == [(QUERY, DOCUMENTS)]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_top_n_and_documents_as_objects_on_every_path(path: str) -> None:
    client, backend = make_client()
    body = {
        "model": "ranker",
        "query": QUERY,
        "documents": [{"text": text} for text in DOCUMENTS],
        "top_n": 2,
        "return_documents": True,
    }
    results = client.post(path, json=body).json()["results"]
    order = expected_order()[:2]
    assert [result["index"] for result in results] == order
    assert [result["document"] for result in results] == [{"text": DOCUMENTS[i]} for i in order]
    assert backend.calls == [(QUERY, DOCUMENTS)]  # every document scored, the best two kept


def test_top_n_past_the_documents_returns_them_all() -> None:
    client, _ = make_client()
    body = {"model": "ranker", "query": QUERY, "documents": DOCUMENTS, "top_n": 50}
    assert len(client.post("/v1/rerank", json=body).json()["results"]) == len(DOCUMENTS)


def test_ties_keep_input_order() -> None:
    client, _ = make_client()
    body = {"model": "ranker", "query": QUERY, "documents": ["same", "same", "same"]}
    results = client.post("/v1/rerank", json=body).json()["results"]
    assert [result["index"] for result in results] == [0, 1, 2]


def test_search_units_count_started_hundreds_of_documents() -> None:
    client, _ = make_client()
    body = {"model": "ranker", "query": "q", "documents": ["d"] * 201}
    assert client.post("/v1/rerank", json=body).json()["meta"]["billed_units"] == {
        "search_units": 3
    }


def through(client: TestClient) -> httpx.Client:
    """An httpx client whose requests the app answers (the cohere client sets per-request
    timeouts, which TestClient refuses)."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, str(request.url), headers=request.headers, content=request.content
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_cohere_v1_and_v2_clients_parse_the_answer() -> None:
    client, _ = make_client()
    order = expected_order()
    http = through(client)
    v1 = cohere.Client(api_key="unused", base_url="http://testserver", httpx_client=http)
    answer = v1.rerank(
        model="ranker", query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True
    )
    assert [result.index for result in answer.results] == order[:3]
    assert answer.results[0].document is not None
    assert answer.results[0].document.text == DOCUMENTS[order[0]]
    assert answer.meta is not None
    assert answer.meta.billed_units is not None
    assert answer.meta.billed_units.search_units == 1
    v2 = cohere.ClientV2(api_key="unused", base_url="http://testserver", httpx_client=http)
    answer2 = v2.rerank(model="ranker", query=QUERY, documents=DOCUMENTS)
    assert [result.index for result in answer2.results] == order
    expected = FakeRerankBackend.score(QUERY, DOCUMENTS[order[0]]).score
    assert answer2.results[0].relevance_score == pytest.approx(expected)


def test_cohere_client_sees_a_refusal_as_bad_request() -> None:
    client, _ = make_client()
    http = through(client)
    v2 = cohere.ClientV2(api_key="unused", base_url="http://testserver", httpx_client=http)
    with pytest.raises(cohere.BadRequestError) as caught:
        v2.rerank(model="ranker", query="q", documents=["d"], max_tokens_per_doc=512)
    assert "max_tokens_per_doc" in str(caught.value.body)


def base(**fields: Any) -> dict[str, Any]:
    return {"model": "ranker", "query": QUERY, "documents": ["a", "b"], **fields}


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        (base(query=""), 400, "query", "'query' is an empty string"),
        (base(documents=[]), 400, "documents", "'documents' must not be an empty list"),
        (base(documents=["a", ""]), 400, "documents", "'documents[1]' has no text"),
        (base(documents=[{"text": ""}]), 400, "documents", "'documents[0]' has no text"),
        (
            base(documents=["d"] * (MAX_DOCUMENTS + 1)),
            400,
            "documents",
            f"has {MAX_DOCUMENTS + 1} items; at most {MAX_DOCUMENTS} are allowed",
        ),
        (base(top_n=0), 400, "top_n", "greater than or equal to 1"),
        (base(top_n=-3), 400, "top_n", "greater than or equal to 1"),
        (base(top_n="2"), 400, "top_n", "valid integer"),
        (base(return_documents="yes"), 400, "return_documents", "valid boolean"),
        (base(documents=[{"text": "a", "title": "t"}]), 400, "documents.0", "Unrecognized"),
        (base(documents=[5]), 400, "documents.0", 'a string or an object {"text": ...}'),
        (base(rank_fields=["title"]), 400, "rank_fields", "ranked by their 'text' field only"),
        (base(max_tokens_per_doc=512), 400, "max_tokens_per_doc", "max_input_tokens"),
        (base(max_chunks_per_doc=10), 400, "max_chunks_per_doc", "not supported"),
        (base(return_len=True), 400, "return_len", "Unrecognized request argument"),
        ({"model": "ranker", "documents": ["a"]}, 400, "query", "Field required"),
        (base(query=5), 400, "query", "valid string"),
        (base(model="nope"), 404, "model", "does not exist"),
    ],
)
def test_bad_requests_are_refused_before_the_model(
    body: dict[str, Any], status: int, param: str | None, message: str
) -> None:
    client, backend = make_client()
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]
    if param is not None:
        assert str(error["param"]).startswith(param)
    assert backend.calls == []


def test_rank_fields_naming_text_only_is_accepted() -> None:
    client, _ = make_client()
    response = client.post("/v1/rerank", json=base(rank_fields=["text"]))
    assert response.status_code == 200


def test_another_task_s_model_is_refused_by_name() -> None:
    client, _ = make_client()
    response = client.post("/v1/classify", json={"model": "ranker", "input": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wrong_model_task"
    assert "call /v1/rerank or /v2/rerank or /rerank" in response.json()["error"]["message"]


def test_the_tokens_used_are_charged_to_the_rate_limit() -> None:
    limits = RateLimitConfig(tokens_per_min=30)
    client, _ = make_client(gateway=GatewayConfig(rate_limits=limits))
    first = client.post("/v1/rerank", json=base(documents=["one two three"] * 4))
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] == 4 * (3 + 3 + 3)  # 36 > 30 per minute
    refused = client.post("/v1/rerank", json=base())
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_a_full_rerank_model_falls_back_to_another() -> None:
    primary = ModelSpec(name="big", task="rerank", path="/unused", fallback="small")
    small = ModelSpec(name="small", task="rerank", path="/unused")
    full = FakeRerankBackend(error=Overloaded("full"))
    spare = FakeRerankBackend()
    registry = ModelRegistry([ServedModel(primary, full), ServedModel(small, spare)])
    api = build_api(registry, AppArgs(models=[primary, small]))
    client = TestClient(api, raise_server_exceptions=False)
    response = client.post("/v1/rerank", json={**base(), "model": "big"})
    assert response.status_code == 200
    assert response.json()["model"] == "small"
    assert response.headers[FALLBACK_HEADER] == "big"
    assert spare.calls == [(QUERY, ["a", "b"])]
