"""Hostile input against every route, without Ray: thousands of generated requests.

Bodies come from the app's own OpenAPI document (valid, then mutated), plus arbitrary JSON,
truncated and re-encoded documents, invalid UTF-8, deep nesting, bodies at and past the size
limit, huge and negative numbers; headers (content types, deadlines, keys, request ids),
methods and paths are generated too. Every answer must be below 500 (a 504 only for a client
that asked for a deadline under a second), arrive at once, and every error must be
OpenAI-shaped. The backends are the deterministic fakes of tests/support/fakes.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.gateway.config import AuthConfig, GatewayConfig, RateLimitConfig
from serve_app.gateway.deadline import TIMEOUT_HEADER
from serve_app.routing.aliases import AliasSpec, AliasTarget
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.answers import (
    BadAnswer,
    Tally,
    check_answer,
    check_error_body,
    check_event_stream,
)
from tests.support.fakes import (
    FakeClassificationBackend,
    FakeEmbeddingBackend,
    FakeGenerationBackend,
    FakeRerankBackend,
)
from tests.support.fuzz_requests import (
    JSON_ROUTES,
    SUPPORTED_GENERATION_OPTIONS,
    ApiShape,
    HostileRequest,
    asks_short_deadline,
    body_requests,
    other_requests,
    valid_body_requests,
)
from tests.support.fuzz_values import FUZZ_SETTINGS, deep_json
from tests.support.openapi_values import body_values, dangling_refs, resolvable

API_KEY = "fuzz-key-0123456789"
MAX_BODY_BYTES = 64 * 1024
MAX_SECONDS = 5.0
MODELS_BY_ROUTE = {
    "/v1/embeddings": "emb",
    "/v1/completions": "gen",
    "/v1/chat/completions": "gen",
    "/v1/classify": "cls",
    **dict.fromkeys(("/v1/rerank", "/v2/rerank", "/rerank"), "rr"),
}


def build_client() -> TestClient:
    specs = [
        ModelSpec(name="emb", task="embedding", path="/unused", supports_dimensions=True),
        ModelSpec(name="emb-small", task="embedding", path="/unused"),
        ModelSpec(name="gen", task="generation", path="/unused", max_output_tokens=64),
        ModelSpec(name="cls", task="classification", path="/unused"),
        ModelSpec(name="rr", task="rerank", path="/unused"),
    ]
    backends = [
        FakeEmbeddingBackend(),
        FakeEmbeddingBackend(),
        FakeGenerationBackend(),
        FakeClassificationBackend(),
        FakeRerankBackend(),
    ]
    args = AppArgs(
        models=specs,
        aliases=[
            AliasSpec(
                name="emb-ab",
                targets=[
                    AliasTarget(model="emb", weight=1),
                    AliasTarget(model="emb-small", weight=1),
                ],
            )
        ],
        max_request_body_bytes=MAX_BODY_BYTES,
        gateway=GatewayConfig(
            auth=AuthConfig(api_keys_env="FUZZ_KEYS"),
            # On, so their code runs for every request; generous, so most requests pass.
            rate_limits=RateLimitConfig(requests_per_s=100_000, tokens_per_min=10**9),
            request_timeout_s=10,
        ),
    )
    registry = ModelRegistry(ServedModel(s, b) for s, b in zip(specs, backends, strict=True))
    api = build_api(registry, args, environ={"FUZZ_KEYS": API_KEY})
    return TestClient(api, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with build_client() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shape(client: TestClient) -> ApiShape:
    return ApiShape(
        openapi=client.get("/openapi.json").json(),
        models_by_route=MODELS_BY_ROUTE,
        all_models=("emb", "emb-small", "emb-ab", "gen", "cls", "rr", "nope"),
        api_key=API_KEY,
        max_body_bytes=MAX_BODY_BYTES,
        extra_paths=("/docs", "/redoc"),
    )


def send(client: TestClient, request: HostileRequest) -> tuple[int, Mapping[str, str], bytes]:
    started = time.perf_counter()
    response = client.request(
        request.method,
        f"http://testserver{request.path}",
        headers=request.headers,
        content=request.body or None,
    )
    seconds = time.perf_counter() - started
    check_answer(
        request, response.status_code, response.headers, response.content, seconds, MAX_SECONDS
    )
    return response.status_code, response.headers, response.content


def fuzz(client: TestClient, strategy: Any, examples: int) -> Tally:
    tally = Tally()

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(strategy)
    def run(request: HostileRequest) -> None:
        status, _, _ = send(client, request)
        tally.add(status)

    run()
    print(f"\n{tally.summary()}")
    return tally


def test_openapi_references_resolve_within_the_document(shape: ApiShape) -> None:
    """A client generated from /openapi.json resolves every `$ref` from the document root."""
    assert dangling_refs(shape.openapi) == []
    for route in JSON_ROUTES:
        assert shape.body_schema(route)["properties"]["model"]["type"] == "string"
    broken = {"a": {"$ref": "#/components/schemas/Gone"}, "b": [{"$ref": "#/a/$ref/x"}]}
    assert dangling_refs(broken) == ["#/components/schemas/Gone", "#/a/$ref/x"]


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_bodies_drawn_from_the_document_are_valid_by_it(shape: ApiShape, route: str) -> None:
    """What hypothesis-jsonschema draws for a route (the valid half of the fuzz) is."""
    validator = Draft202012Validator(resolvable(shape.body_schema(route), shape.openapi))

    @settings(FUZZ_SETTINGS, max_examples=40)
    @given(body_values(shape.openapi, route))
    def run(body: Any) -> None:
        validator.validate(body)

    run()


# A document as FastAPI writes one when bodies are models it parses: `$ref`s into `components`.
_MESSAGE_SCHEMA = {"$ref": "#/components/schemas/Message"}
_REFERRING_DOCUMENT: dict[str, Any] = {
    "paths": {
        "/v1/chat": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["model", "messages"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "n": {"type": "integer", "minimum": 1},
                                    "messages": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": _MESSAGE_SCHEMA,
                                    },
                                },
                            }
                        }
                    }
                }
            }
        }
    },
    "components": {
        "schemas": {
            "Message": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role"],
                "properties": {"role": {"$ref": "#/components/schemas/Role"}},
            },
            "Role": {"enum": ["user", "assistant"]},
        }
    },
}


def test_bodies_follow_references_into_the_documents_components() -> None:
    schema = _REFERRING_DOCUMENT["paths"]["/v1/chat"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    validator = Draft202012Validator(resolvable(schema, _REFERRING_DOCUMENT))
    overrides = {"model": st.just("m"), "n": st.just(1)}

    @settings(FUZZ_SETTINGS, max_examples=40)
    @given(body_values(_REFERRING_DOCUMENT, "/v1/chat", overrides))
    def run(body: Any) -> None:
        validator.validate(body)
        assert body["model"] == "m"
        assert body.get("n", 1) == 1
        assert {message["role"] for message in body["messages"]} <= {"user", "assistant"}

    run()


@pytest.mark.parametrize(
    ("value", "short"),
    [
        ("0.5", True),
        ("1e-9", True),
        ("1", False),
        ("5", False),
        ("0", False),
        ("-1", False),
        ("nan", False),
        ("inf", False),
        ("abc", False),
        ("", False),
        (None, False),
    ],
)
def test_a_short_deadline_is_one_the_gateway_would_set(value: str | None, short: bool) -> None:
    headers = [] if value is None else [(TIMEOUT_HEADER, value)]
    assert asks_short_deadline(headers) is short


_ERROR_EVENT = b'data: {"error": {"message": "m", "type": "t", "param": null, "code": "c"}}\n\n'


@pytest.mark.parametrize(
    "body",
    [
        b'data: {"id": "x"}\n\n',
        b"event: x\n\ndata: [DONE]\n\n",
        b'data: {"id": \n\ndata: [DONE]\n\n',
        b"data: [1]\n\ndata: [DONE]\n\n",
        b'data: {"error": {"message": "m"}}\n\ndata: [DONE]\n\n',
        _ERROR_EVENT.replace(b'"m"', b'"Traceback (most recent call last)"') + b"data: [DONE]\n\n",
        b"data: \xff\n\ndata: [DONE]\n\n",
        b"",
    ],
)
def test_a_broken_event_stream_is_a_bad_answer(body: bytes) -> None:
    with pytest.raises(BadAnswer):
        check_event_stream(body)


def test_a_stream_of_events_and_an_error_event_is_a_good_answer() -> None:
    check_event_stream(b'data: {"id": "x"}\n\n' + _ERROR_EVENT + b"data: [DONE]\n\n")


@pytest.mark.timeout(120)
def test_hostile_bodies_and_headers_on_every_json_route(
    client: TestClient, shape: ApiShape
) -> None:
    tally = fuzz(client, body_requests(shape), examples=800)
    # The fuzzer reaches past validation, not only into 4xx.
    assert tally.statuses.get(200, 0) > 50
    assert {400, 401, 413, 415} <= set(tally.statuses)


@pytest.mark.timeout(120)
def test_schema_valid_bodies_reach_the_models_and_answer(
    client: TestClient, shape: ApiShape
) -> None:
    tally = fuzz(client, valid_body_requests(shape), examples=300)
    assert tally.statuses.get(200, 0) > 120  # 40%, as 200 of the 500 examples it once drew
    routes = ("/v1/completions", "/v1/chat/completions")
    strategy = valid_body_requests(shape, routes, SUPPORTED_GENERATION_OPTIONS)
    tally = fuzz(client, strategy, examples=300)
    assert tally.statuses.get(200, 0) > 200


@pytest.mark.timeout(120)
def test_any_method_on_any_path(client: TestClient, shape: ApiShape) -> None:
    tally = fuzz(client, other_requests(shape), examples=500)
    assert {200, 404, 405} <= set(tally.statuses)


def _request(body: bytes, content_type: str = "application/json") -> HostileRequest:
    headers = [("content-type", content_type), ("authorization", f"Bearer {API_KEY}")]
    return HostileRequest("POST", "/v1/embeddings", headers, body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (deep_json(20_000, "["), 400),
        (deep_json(10_000, "{"), 400),
        (b'{"model":"emb","input":' + deep_json(10_000, "[") + b"}", 400),
        (b'{"model":"emb","input":"\xed\xa0\x80"}', 400),
        (b'{"model":"emb","input":"\\ud800"}', 400),
        (b'\xef\xbb\xbf{"model":"emb","input":"x"}', 400),
        ('{"model":"emb","input":"ü"}'.encode("utf-16"), 400),
        (b'{"model":"emb","input":"x","dimensions":1e999}', 400),
        (b'{"model":"emb","input":"x","dimensions":-1}', 400),
        (b'{"model":"emb","input":"x","dimensions":123456789012345678901234567890}', 400),
        (b'{"model":"emb","input":"' + b"a" * (MAX_BODY_BYTES + 1) + b'"}', 413),
        (b'{"model":"emb","input":"\\u0000"}', 200),
    ],
)
def test_known_nasty_bodies(client: TestClient, body: bytes, status: int) -> None:
    assert send(client, _request(body))[0] == status


def test_a_lying_content_length_is_refused_before_the_body_is_read(client: TestClient) -> None:
    request = _request(b'{"model":"emb","input":"x"}')
    headers = [*request.headers, ("content-length", str(10 * MAX_BODY_BYTES))]
    status, _, _ = send(client, HostileRequest("POST", request.path, headers, request.body))
    assert status in (400, 413)


@pytest.mark.parametrize("root_path", ["", "/fuzz", "/a/b"])
def test_keys_and_limits_hold_under_a_route_prefix(root_path: str) -> None:
    """Serve mounts an application at its route_prefix: `path` then starts with `root_path`.

    Found by the fuzz over HTTP (the service ran under /fuzz): the gateway matched `/v1/` on the
    raw path, so with any route_prefix but `/` the API keys were never asked for.
    """
    with TestClient(build_client().app, root_path=root_path) as prefixed:
        body = {"model": "emb", "input": "x"}
        refused = prefixed.post(f"{root_path}/v1/embeddings", json=body)
        assert refused.status_code == 401
        check_error_body(refused.content)
        headers = {"authorization": f"Bearer {API_KEY}"}
        allowed = prefixed.post(f"{root_path}/v1/embeddings", json=body, headers=headers)
        assert allowed.status_code == 200
        assert "x-ratelimit-limit-requests" in allowed.headers
