"""The gateway around the routes: keys, rate limits, request ids, deadlines, fallback, cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
import numpy as np
from fastapi.testclient import TestClient

from deployments.contract import (
    EmbeddingBatch,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
)
from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.errors import Overloaded
from serve_app.metrics import IngressMetrics
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.fakes import FakeEmbeddingBackend, FakeGenerationBackend, FakeRerankBackend

MODEL = "minilm"


def client_for(
    gateway: dict[str, Any] | None = None,
    backends: dict[str, Any] | None = None,
    specs: list[dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
    peer: tuple[str, int] = ("testclient", 50000),
) -> TestClient:
    spec_dicts = specs or [{"name": MODEL, "task": "embedding", "path": "/unused"}]
    backends = backends or {}
    models = [
        ServedModel(
            spec=ModelSpec.model_validate(spec),
            backend=backends.get(spec["name"]) or FakeEmbeddingBackend(),
        )
        for spec in spec_dicts
    ]
    args = AppArgs.model_validate({"models": spec_dicts, "gateway": gateway or {}})
    api = build_api(ModelRegistry(models), args, environ=environ or {})
    return TestClient(api, raise_server_exceptions=False, client=peer)


def embed(client: TestClient, headers: dict[str, str] | None = None, text: str = "x") -> Any:
    return client.post(
        "/v1/embeddings", json={"model": MODEL, "input": text}, headers=headers or {}
    )


KEYED = {"auth": {"api_keys_env": "KEYS"}}


def test_with_keys_every_v1_route_needs_one() -> None:
    client = client_for(KEYED, environ={"KEYS": "sk-one,sk-two"})
    missing = embed(client)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert embed(client, {"Authorization": "Bearer sk-nope"}).json()["error"]["code"] == (
        "invalid_api_key"
    )
    assert client.get("/v1/models").status_code == 401
    assert embed(client, {"Authorization": "Bearer sk-two"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_without_keys_the_service_is_open() -> None:
    assert embed(client_for()).status_code == 200


def test_request_rate_limit_is_per_key_with_openai_headers() -> None:
    gateway = {**KEYED, "rate_limits": {"requests_per_s": 0.001, "burst_requests": 2}}
    client = client_for(gateway, environ={"KEYS": "sk-a,sk-b"})
    first = embed(client, {"Authorization": "Bearer sk-a"})
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert embed(client, {"Authorization": "Bearer sk-a"}).status_code == 200
    limited = embed(client, {"Authorization": "Bearer sk-a"})
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    assert embed(client, {"Authorization": "Bearer sk-b"}).status_code == 200


def test_tokens_per_minute_are_charged_from_real_usage() -> None:
    client = client_for({"rate_limits": {"tokens_per_min": 10}})
    long_text = " ".join(["word"] * 20)  # the fake counts 22 tokens
    assert embed(client, text=long_text).status_code == 200
    limited = embed(client)
    assert limited.status_code == 429
    assert "tokens per minute" in limited.json()["error"]["message"]


def test_request_id_is_honoured_or_generated() -> None:
    client = client_for()
    assert embed(client, {"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = embed(client).headers["x-request-id"]
    assert len(generated) == 32
    assert embed(client, {"x-request-id": "bad id\n"}).headers["x-request-id"] != "bad id\n"
    assert client.get("/v1/nothing").headers["x-request-id"]


class SlowBackend(FakeEmbeddingBackend):
    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.cancelled = 0

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return await super().embed(texts)


def test_a_request_past_its_deadline_gets_504_and_its_work_is_cancelled() -> None:
    slow = SlowBackend(delay_s=5)
    client = client_for(backends={MODEL: slow})
    response = embed(client, {"x-request-timeout": "0.1"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert slow.cancelled == 1
    bad = embed(client, {"x-request-timeout": "soon"})
    assert bad.status_code == 400


def test_the_default_deadline_comes_from_the_config() -> None:
    client = client_for({"request_timeout_s": 0.1}, backends={MODEL: SlowBackend(delay_s=5)})
    assert embed(client).status_code == 504


FALLBACK_SPECS = [
    {"name": "big", "task": "embedding", "path": "/unused", "fallback": "small"},
    {"name": "small", "task": "embedding", "path": "/unused"},
]


def test_a_full_primary_degrades_to_its_fallback_and_says_so() -> None:
    client = client_for(
        backends={"big": FakeEmbeddingBackend(error=Overloaded("full"))},
        specs=FALLBACK_SPECS,
    )
    response = client.post("/v1/embeddings", json={"model": "big", "input": "x"})
    assert response.status_code == 200
    assert response.json()["model"] == "small"
    assert response.headers["x-fallback-from"] == "big"
    assert response.headers["x-fallback-reason"] == "queue_full"


def test_when_the_fallback_is_full_too_the_client_gets_503() -> None:
    client = client_for(
        backends={
            "big": FakeEmbeddingBackend(error=Overloaded("full")),
            "small": FakeEmbeddingBackend(error=Overloaded("full too")),
        },
        specs=FALLBACK_SPECS,
    )
    response = client.post("/v1/embeddings", json={"model": "big", "input": "x"})
    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_repeated_inputs_are_served_from_the_cache_with_identical_results() -> None:
    backend = FakeEmbeddingBackend()
    client = client_for(backends={MODEL: backend})
    first = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b", "a"]})
    second = client.post("/v1/embeddings", json={"model": MODEL, "input": ["b", "c", "a"]})
    assert backend.calls == [["a", "b"], ["c"]]  # each distinct text reaches the model once
    by_text = {t: d["embedding"] for t, d in zip("aba", first.json()["data"], strict=True)}
    second_data = second.json()["data"]
    assert np.allclose(second_data[0]["embedding"], by_text["b"])
    assert np.allclose(second_data[2]["embedding"], by_text["a"])
    assert first.json()["usage"]["prompt_tokens"] == 9
    assert second.json()["usage"]["prompt_tokens"] == 9


def test_the_cache_can_be_turned_off_per_model_and_globally() -> None:
    backend = FakeEmbeddingBackend()
    specs = [{"name": MODEL, "task": "embedding", "path": "/unused", "cache": False}]
    client = client_for(backends={MODEL: backend}, specs=specs)
    embed(client)
    embed(client)
    assert backend.calls == [["x"], ["x"]]
    backend = FakeEmbeddingBackend()
    client = client_for({"cache": {"enabled": False}}, backends={MODEL: backend})
    embed(client)
    embed(client)
    assert len(backend.calls) == 2


def test_a_deliberately_slow_primary_sheds_to_its_fallback_by_latency() -> None:
    specs: list[dict[str, Any]] = [
        {
            "name": "big",
            "task": "embedding",
            "path": "/unused",
            "fallback": "small",
            "latency_target_ms": 20,
        },
        {"name": "small", "task": "embedding", "path": "/unused"},
    ]
    slow = SlowBackend(delay_s=0.05)
    client = client_for(backends={"big": slow}, specs=specs)
    answered_by = [
        client.post("/v1/embeddings", json={"model": "big", "input": f"t{i}"}).json()["model"]
        for i in range(8)
    ]
    assert answered_by[:5] == ["big"] * 5  # judged on five recent samples
    assert answered_by[5:] == ["small"] * 3
    last = client.post("/v1/embeddings", json={"model": "big", "input": "again"})
    assert last.headers["x-fallback-reason"] == "latency"


def test_a_client_cannot_lengthen_its_deadline() -> None:
    slow = SlowBackend(delay_s=5)
    client = client_for({"request_timeout_s": 0.2}, backends={MODEL: slow})
    started = time.monotonic()
    response = embed(client, {"x-request-timeout": "30"})
    assert response.status_code == 504
    assert "0.2 s" in response.json()["error"]["message"]
    assert time.monotonic() - started < 2.0


def trickled_post(app: Any, body_parts: list[bytes], gap_s: float) -> tuple[int, Any, float]:
    """POST /v1/embeddings straight into the ASGI app, its body sent in parts `gap_s` apart
    (as a slow client sends it); returns the status, headers and seconds until the answer."""
    declared = sum(len(part) for part in body_parts) + 1000  # never complete
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(declared).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    parts = list(body_parts)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(gap_s)
        if parts:
            return {"type": "http.request", "body": parts.pop(0), "more_body": True}
        await asyncio.sleep(3600)  # the client never finishes
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> float:
        started = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), 10)
        return time.monotonic() - started

    took_s = asyncio.run(scenario())
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"]), took_s


def test_a_body_that_trickles_in_is_cut_at_the_deadline_with_408() -> None:
    args = AppArgs.model_validate(
        {
            "models": [{"name": MODEL, "task": "embedding", "path": "/unused"}],
            "gateway": {"request_timeout_s": 0.5},
        }
    )
    api = build_api(ModelRegistry([ServedModel(args.models[0], FakeEmbeddingBackend())]), args)
    status, headers, took_s = trickled_post(api, [b'{"model": "minilm", '] * 50, gap_s=0.1)
    assert status == 408
    assert headers[b"connection"] == b"close"
    assert took_s < 2.0


class CountingBackend(FakeEmbeddingBackend):
    def __init__(self) -> None:
        super().__init__()
        self.described = 0

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        self.described += 1
        await asyncio.sleep(0.01)
        return await super().describe(timeout_s)


def test_readiness_probes_share_one_recent_answer() -> None:
    counting = CountingBackend()
    client = client_for(backends={MODEL: counting})
    started = time.monotonic()
    for _ in range(20):
        assert client.get("/readyz").json() == {
            "status": "ready",
            "models": [MODEL],
            "scaled_to_zero": [],
        }
    if time.monotonic() - started < 0.9:
        assert counting.described == 1
    time.sleep(1.1)
    client.get("/readyz")
    assert counting.described >= 2


def test_failed_authentications_are_limited_per_address_without_locking_out_used_keys() -> None:
    gateway = {**KEYED, "auth": {**KEYED["auth"], "failed_attempts_burst": 3}}
    client = client_for(gateway, environ={"KEYS": "sk-used,sk-fresh"})
    assert embed(client, {"Authorization": "Bearer sk-used"}).status_code == 200
    failures = [embed(client, {"Authorization": f"Bearer sk-guess-{i}"}) for i in range(5)]
    assert [r.status_code for r in failures] == [401, 401, 401, 429, 429]
    refused = failures[-1]
    assert refused.json()["error"]["code"] == "too_many_failed_authentications"
    assert int(refused.headers["retry-after"]) >= 1
    # A key this address already used still works; a right guess from it now does not.
    assert embed(client, {"Authorization": "Bearer sk-used"}).status_code == 200
    assert embed(client, {"Authorization": "Bearer sk-fresh"}).status_code == 429


def test_forwarded_for_from_an_untrusted_peer_does_not_make_a_new_client() -> None:
    client = client_for({"rate_limits": {"requests_per_s": 0.001, "burst_requests": 2}})
    statuses = [embed(client, {"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(5)]
    assert statuses == [200, 200, 429, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    gateway = {
        "rate_limits": {"requests_per_s": 0.001, "burst_requests": 1},
        "trusted_proxies": ["10.0.0.0/8"],
    }
    client = client_for(gateway, peer=("10.1.2.3", 40000))
    assert embed(client, {"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert embed(client, {"X-Forwarded-For": "203.0.113.2"}).status_code == 200
    assert embed(client, {"X-Forwarded-For": "203.0.113.1"}).status_code == 429
    # The proxy itself, sending no header, is one more client.
    assert embed(client).status_code == 200


def test_with_keys_task_routes_outside_v1_need_one_too() -> None:
    spec = {"name": "ranker", "task": "rerank", "path": "/unused"}
    client = client_for(
        KEYED,
        backends={"ranker": FakeRerankBackend()},
        specs=[spec],
        environ={"KEYS": "sk-one"},
    )
    body = {"model": "ranker", "query": "q", "documents": ["d"]}
    for path in ("/v2/rerank", "/rerank"):
        missing = client.post(path, json=body)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        keyed = client.post(path, json=body, headers={"Authorization": "Bearer sk-one"})
        assert keyed.status_code == 200
    assert client.post("/v2/other", json=body).status_code == 404  # not a task route: no gate


class RecordingMetrics:
    """What the gateway counts, as (method, arguments)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        return lambda *args: self.events.append((method, args))

    def of(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.events if name == method]


async def alone_then_a_pair(api: Any, path: str, body: dict[str, Any]) -> list[httpx.Response]:
    """Five requests one after another (the model's service time), then two at once: the
    first goes alone (always admitted), the second finds it out."""
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        answers = [await client.post(path, json=body) for _ in range(5)]
        first = asyncio.create_task(client.post(path, json=body))
        await asyncio.sleep(0.02)  # the first is out, most of its service time still to go
        second = await client.post(path, json=body)
        answers += [await first, second]
    return answers


def test_a_predicted_miss_is_a_503_counted_apart_from_a_full_queue() -> None:
    specs = [
        {"name": MODEL, "task": "embedding", "path": "/unused", "cache": False},
        {
            "name": "slow",
            "task": "embedding",
            "path": "/unused",
            "cache": False,
            "slo": {"latency_ms": 300},
        },
    ]
    metrics = RecordingMetrics()
    models = [
        ServedModel(
            ModelSpec.model_validate(specs[0]), FakeEmbeddingBackend(error=Overloaded("full"))
        ),
        ServedModel(ModelSpec.model_validate(specs[1]), SlowBackend(delay_s=0.26)),
    ]
    api = build_api(
        ModelRegistry(models),
        AppArgs.model_validate({"models": specs}),
        metrics=cast(IngressMetrics, metrics),
        environ={},
    )
    # Alone, a call takes 0.26 s: within the objective, but past the 0.8 of it admission keeps.
    # 40 ms to spare, so a busy machine's slower answers still count as within it.
    answers = asyncio.run(alone_then_a_pair(api, "/v1/embeddings", {"model": "slow", "input": "x"}))
    assert [a.status_code for a in answers] == [200] * 6 + [503]
    refused = answers[-1]
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "overloaded")
    assert "past its objective of 300 ms" in error["message"]
    counted = metrics.of("count_objective")
    assert counted[:5] == [("slow", True)] * 5
    assert [model for model, _ in counted] == ["slow"] * 6  # every answer, not the refusal
    client = TestClient(api, raise_server_exceptions=False)
    client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert metrics.of("count_rejection") == [("slow", "predicted_miss"), (MODEL, "queue_full")]


class SlowTokensBackend(FakeGenerationBackend):
    """The first token after `first_s`, every later one `gap_s` after the one before; a whole
    answer when its last token is ready."""

    def __init__(self, gap_s: float, first_s: float = 0.0) -> None:
        super().__init__()
        self.gap_s = gap_s
        self.first_s = first_s

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        for i, chunk in enumerate(self._chunks(request)):
            await asyncio.sleep(self.gap_s if i else self.first_s)
            yield chunk

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        await asyncio.sleep(self.first_s + self.gap_s * (request.max_tokens - 1))
        return await super().generate(request)


def test_a_stream_meets_the_objective_by_its_first_token_a_whole_answer_by_its_end() -> None:
    spec = {"name": "gen", "task": "generation", "path": "/unused", "slo": {"latency_ms": 100}}
    metrics = RecordingMetrics()
    api = build_api(
        ModelRegistry([ServedModel(ModelSpec.model_validate(spec), SlowTokensBackend(0.06))]),
        AppArgs.model_validate({"models": [spec]}),
        metrics=cast(IngressMetrics, metrics),
        environ={},
    )
    client = TestClient(api, raise_server_exceptions=False)
    body = {"model": "gen", "prompt": "hi", "max_tokens": 3}
    streamed = client.post("/v1/completions", json={**body, "stream": True})
    whole = client.post("/v1/completions", json=body)
    assert streamed.status_code == whole.status_code == 200
    # Both took about 0.12 s; the stream's first token came at once.
    assert [args[2] > 0.1 for args in metrics.of("observe_request")] == [True, True]
    assert metrics.of("count_objective") == [("gen", True), ("gen", False)]


def test_a_stream_its_queue_makes_late_is_refused_before_it_starts() -> None:
    spec = {"name": "gen", "task": "generation", "path": "/unused", "slo": {"latency_ms": 100}}
    api = build_api(
        ModelRegistry([ServedModel(ModelSpec.model_validate(spec), SlowTokensBackend(0, 0.09))]),
        AppArgs.model_validate({"models": [spec]}),
        environ={},
    )
    body = {"model": "gen", "prompt": "hi", "max_tokens": 2, "stream": True}
    # Its first token alone takes 0.09 s: within the objective, past the 0.8 of it admitted.
    answers = asyncio.run(alone_then_a_pair(api, "/v1/completions", body))
    assert [a.status_code for a in answers] == [200] * 6 + [503]
    assert answers[0].headers["content-type"].startswith("text/event-stream")
    assert answers[-1].headers["retry-after"] == "1"
    assert answers[-1].json()["error"]["code"] == "overloaded"
