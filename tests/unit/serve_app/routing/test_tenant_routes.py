"""Tenants through the HTTP API: a busy model's fair queue answers the tenant over its share
with an OpenAI-shaped 429 `tenant_share` (or its fallback's answer), lets the tenant below it
through, holds a stream's place until its last token, and the metrics see the refusal's reason
and each tenant's latency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import httpx

from deployments.contract import EmbeddingBatch, GenerationChunk, GenerationRequest
from serve_app.api import build_api
from serve_app.config import AppArgs
from serve_app.metrics import IngressMetrics
from serve_app.routing.registry import ModelRegistry, ServedModel
from serve_app.routing.replica_counts import RecentReplicaCounts, ReplicaCount
from tests.support.fakes import FakeEmbeddingBackend, FakeGenerationBackend, FakeReplicaCounts

MODEL = "minilm"


class HeldBackend(FakeEmbeddingBackend):
    """Embeds once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.out = 0

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        self.out += 1
        await self.release.wait()
        return await super().embed(texts)


class HeldStreamBackend(FakeGenerationBackend):
    """Streams its first chunk at once and the rest once the test lets it; records when each
    request started and when each stream ended."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.events: list[str] = []

    async def generate(self, request: GenerationRequest) -> list[Any]:
        self.events.append(f"generate {request.request_id[:4]}")
        return await super().generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.events.append("stream")
        first = True
        async for chunk in super().stream(request):
            yield chunk
            if first:
                first = False
                await self.release.wait()
        self.events.append("stream ended")


def tenant_args(
    tmp_path: Path,
    models: list[dict[str, Any]],
    max_waiting: int = 1,
    in_flight: dict[str, int] | None = None,
) -> AppArgs:
    """Two tenants of weight 1 (keys sk-big and sk-small); one call out per model unless
    `in_flight` says otherwise."""
    (tmp_path / "keys.txt").write_text("sk-big big\nsk-small small\n")
    (tmp_path / "tenants.yaml").write_text("tenants:\n  big: {weight: 1}\n  small: {weight: 1}\n")
    return AppArgs.model_validate(
        {
            "models": models,
            "gateway": {
                "auth": {"api_keys_file": str(tmp_path / "keys.txt")},
                "request_timeout_s": 3,
                "tenants": {
                    "file": str(tmp_path / "tenants.yaml"),
                    "max_waiting_per_model": max_waiting,
                    **(in_flight or {"max_in_flight_per_model": 1}),
                },
            },
        }
    )


class RecordedMetrics:
    def __init__(self) -> None:
        self.rejections: list[tuple[str, str]] = []
        self.tenants: list[tuple[str, str]] = []

    def observe_request(self, model: str, route: str, status: int, latency_s: float) -> None:
        return None

    def observe_tenant(self, model: str, tenant: str, latency_s: float) -> None:
        self.tenants.append((model, tenant))

    def count_tokens(self, model: str, direction: str, count: int) -> None:
        return None

    def count_cache(self, model: str, hits: int, misses: int) -> None:
        return None

    def count_rejection(self, model: str, reason: str) -> None:
        self.rejections.append((model, reason))

    def count_fallback(self, model: str, fallback: str, reason: str) -> None:
        return None


def test_the_tenant_over_its_share_is_refused_and_the_one_below_gets_through(
    tmp_path: Path,
) -> None:
    args = tenant_args(
        tmp_path, [{"name": MODEL, "task": "embedding", "path": "/unused", "cache": False}]
    )
    backend = HeldBackend()
    metrics = RecordedMetrics()
    api = build_api(
        ModelRegistry([ServedModel(args.models[0], backend)]),
        args,
        metrics=cast(IngressMetrics, metrics),
        environ={},
    )

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            def post(key: str) -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(
                    client.post(
                        "/v1/embeddings",
                        json={"model": MODEL, "input": "x"},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                )

            out, waiting = post("sk-big"), post("sk-big")
            await asyncio.sleep(0.05)
            late = await post("sk-big")  # the queue is full of big's requests: refused now
            small = post("sk-small")  # pushes big's waiting one out instead
            pushed_out = await waiting
            backend.release.set()
            return {"late": late, "pushed_out": pushed_out, "out": await out, "small": await small}

    answers = asyncio.run(scenario())
    for refused in (answers["late"], answers["pushed_out"]):
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "tenant_share"
        assert error["type"] == "rate_limit_error"
        assert "tenant 'big' is over its share" in error["message"]
    assert answers["out"].status_code == 200
    assert answers["small"].status_code == 200
    assert metrics.rejections == [(MODEL, "tenant_share"), (MODEL, "tenant_share")]
    assert sorted(metrics.tenants) == [(MODEL, "big")] * 3 + [(MODEL, "small")]


def test_without_tenants_no_latency_by_tenant_is_recorded() -> None:
    args = AppArgs.model_validate(
        {"models": [{"name": MODEL, "task": "embedding", "path": "/unused", "cache": False}]}
    )
    metrics = RecordedMetrics()
    api = build_api(
        ModelRegistry([ServedModel(args.models[0], FakeEmbeddingBackend())]),
        args,
        metrics=cast(IngressMetrics, metrics),
        environ={},
    )

    async def scenario() -> int:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
            return response.status_code

    assert asyncio.run(scenario()) == 200
    assert metrics.tenants == []


def post_as(client: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> Any:
    return asyncio.create_task(
        client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    )


def test_a_stream_keeps_its_tenant_slot_until_its_last_token(tmp_path: Path) -> None:
    args = tenant_args(tmp_path, [{"name": "gen", "task": "generation", "path": "/unused"}])
    backend = HeldStreamBackend()
    api = build_api(ModelRegistry([ServedModel(args.models[0], backend)]), args, environ={})

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"model": "gen", "prompt": "hi", "max_tokens": 3}
            streamed = post_as(client, "sk-big", "/v1/completions", {**body, "stream": True})
            await asyncio.sleep(0.05)  # its response has started: the first token is out
            whole = post_as(client, "sk-small", "/v1/completions", body)
            await asyncio.sleep(0.05)
            assert not whole.done()  # the model's one slot is still the stream's
            backend.release.set()
            return [await streamed, await whole]

    streamed, whole = asyncio.run(scenario())
    assert streamed.status_code == whole.status_code == 200
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert backend.events == ["stream", "stream ended", "generate cmpl"]


def test_a_tenant_over_its_share_of_the_primary_is_answered_by_the_fallback(
    tmp_path: Path,
) -> None:
    models = [
        {"name": MODEL, "task": "embedding", "path": "/unused", "cache": False, "fallback": "fb"},
        {"name": "fb", "task": "embedding", "path": "/unused", "cache": False},
    ]
    args = tenant_args(tmp_path, models)
    primary = HeldBackend()
    api = build_api(
        ModelRegistry(
            [
                ServedModel(args.models[0], primary),
                ServedModel(args.models[1], FakeEmbeddingBackend()),
            ]
        ),
        args,
        environ={},
    )

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"model": MODEL, "input": "x"}
            out, waiting = (post_as(client, "sk-big", "/v1/embeddings", body) for _ in range(2))
            await asyncio.sleep(0.05)
            over = await post_as(client, "sk-big", "/v1/embeddings", body)
            primary.release.set()
            return [over, await out, await waiting]

    over, out, waiting = asyncio.run(scenario())
    assert over.status_code == 200, over.text
    assert over.headers["x-fallback-from"] == MODEL
    assert over.headers["x-fallback-reason"] == "tenant_share"
    assert over.json()["model"] == "fb"
    assert out.status_code == waiting.status_code == 200
    assert out.json()["model"] == waiting.json()["model"] == MODEL


def test_a_model_with_more_replicas_gets_more_calls_out_at_once(tmp_path: Path) -> None:
    model = {"name": MODEL, "task": "embedding", "path": "/unused", "cache": False}
    args = tenant_args(tmp_path, [model], in_flight={"max_in_flight_per_replica": 1})
    backend = HeldBackend()
    counts = FakeReplicaCounts({MODEL: ReplicaCount(running=2, starting=0)})
    api = build_api(
        ModelRegistry([ServedModel(args.models[0], backend)]),
        args,
        environ={},
        model_replica_counts=counts,
        recent_replica_counts=RecentReplicaCounts(counts, [args.models[0].deployment_name]),
    )

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"model": MODEL, "input": "x"}
            tasks = [post_as(client, "sk-big", "/v1/embeddings", body)]
            await asyncio.sleep(0.05)  # counts unknown at first (as one replica); now read
            tasks += [post_as(client, "sk-big", "/v1/embeddings", body) for _ in range(2)]
            await asyncio.sleep(0.05)
            out = backend.out
            backend.release.set()
            return [out, *[(await task).status_code for task in tasks]]

    assert asyncio.run(scenario()) == [2, 200, 200, 200]
    assert counts.reads == 1
