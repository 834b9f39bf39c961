"""/v1/completions and /v1/chat/completions over a fake generation backend, without Ray:
OpenAI's response and SSE chunk shapes, usage, finish reasons, and every 400."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray.exceptions import RayTaskError

from deployments.contract import GenerationChunk, GenerationRequest, GenerationResult, InputRejected
from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.errors import InvalidRequest, ServiceUnavailable
from serve_app.routing.backends import _translate_failures
from serve_app.routing.registry import ModelRegistry, ServedModel
from tests.support.sse import parse_events

MODEL = "tiny-gpt"
PIECES = ["Once", " upon", " a", " time"]


class FakeGenerationBackend:
    """Streams PIECES (cut to max_tokens), one token each; prompt tokens = words in the prompt."""

    def __init__(self, fail_after: int | None = None, chunk_delay_s: float = 0.0) -> None:
        self.requests: list[GenerationRequest] = []
        self.fail_after = fail_after
        self.chunk_delay_s = chunk_delay_s
        self.closed = 0

    def _chunks(self, request: GenerationRequest) -> list[GenerationChunk]:
        prompt = request.prompt or " ".join(m.content for m in request.messages or ())
        prompt_tokens = len(request.prompt_token_ids or prompt.split())
        if request.max_tokens == 0:  # the prompt alone (echo): no completion tokens
            return [GenerationChunk("", prompt_tokens, 0, "length")]
        pieces = PIECES[: request.max_tokens]
        reason = "length" if request.max_tokens <= len(PIECES) else "stop"
        return [
            GenerationChunk(
                text,
                prompt_tokens,
                i + 1,
                reason if i == len(pieces) - 1 else None,  # type: ignore[arg-type]
            )
            for i, text in enumerate(pieces)
        ]

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        self.requests.append(request)
        chunks = self._chunks(request)
        last = chunks[-1]
        assert last.finish_reason is not None
        return [
            GenerationResult(
                "".join(c.text for c in chunks),
                last.prompt_tokens,
                last.completion_tokens,
                last.finish_reason,
                index,
            )
            for index in range(request.n)
        ]

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.requests.append(request)
        try:
            for index, chunk in enumerate(self._chunks(request)):
                if self.fail_after is not None and index == self.fail_after:
                    raise ServiceUnavailable("The model 'tiny-gpt' is temporarily unavailable.")
                await asyncio.sleep(self.chunk_delay_s)
                yield chunk
        finally:
            self.closed += 1

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        return {"task": "generation"}


def make_client(
    backend: FakeGenerationBackend | None = None,
    max_output_tokens: int = 64,
    gateway: dict[str, Any] | None = None,
) -> tuple[TestClient, FakeGenerationBackend]:
    backend = backend or FakeGenerationBackend()
    spec = ModelSpec(
        name=MODEL, task="generation", path="/unused", max_output_tokens=max_output_tokens
    )
    embedder = ModelSpec(name="embedder", task="embedding", path="/unused")
    models = [ServedModel(spec, backend), ServedModel(embedder, None)]
    args = AppArgs.model_validate({"models": [spec, embedder], "gateway": gateway or {}})
    api = build_api(ModelRegistry(models), args)
    return TestClient(api, raise_server_exceptions=False), backend


def sse_events(response: Any) -> list[Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_events(response.text)


def assert_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    return error


def test_completion_body_usage_and_finish_reason() -> None:
    client, backend = make_client()
    response = client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "tell me a story", "max_tokens": 3, "temperature": 0},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == MODEL
    assert body["choices"] == [
        {"index": 0, "text": "Once upon a", "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    [sent] = backend.requests
    assert sent.prompt == "tell me a story"
    assert sent.sampling.greedy
    assert sent.request_id == body["id"]


def test_completion_defaults_to_sixteen_tokens_and_passes_options() -> None:
    client, backend = make_client()
    body = {"model": MODEL, "prompt": "x", "stop": "END", "seed": 7, "top_p": 0.5}
    assert client.post("/v1/completions", json=body).status_code == 200
    [sent] = backend.requests
    assert (sent.max_tokens, sent.max_tokens_is_default) == (16, True)
    assert sent.stop == ("END",)
    assert (sent.sampling.seed, sent.sampling.top_p, sent.sampling.temperature) == (7, 0.5, 1.0)
    assert response_finish(client, {"model": MODEL, "prompt": "x", "max_tokens": 10}) == "stop"


def response_finish(client: TestClient, body: dict[str, Any]) -> str:
    reason: str = client.post("/v1/completions", json=body).json()["choices"][0]["finish_reason"]
    return reason


def test_several_prompts_become_several_choices() -> None:
    client, backend = make_client()
    response = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": ["a b", "c"], "max_tokens": 2}
    )
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len({r.request_id for r in backend.requests}) == 2


def test_completion_stream_is_openai_sse_ending_with_done() -> None:
    client, backend = make_client()
    response = client.post(
        "/v1/completions",
        json={
            "model": MODEL,
            "prompt": "go",
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = sse_events(response)
    assert {e["object"] for e in events} == {"text_completion"}
    assert len({e["id"] for e in events}) == 1
    texts = [e["choices"][0]["text"] for e in events if e["choices"]]
    assert "".join(texts) == "Once upon a time"
    reasons = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert reasons == [None, None, None, None, "length"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}
    assert backend.closed == 1


def test_chat_body_and_template_input() -> None:
    client, backend = make_client()
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "be nice"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_completion_tokens": 2,
        },
    )
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Once upon"},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    [sent] = backend.requests
    assert sent.prompt is None
    assert [(m.role, m.content) for m in sent.messages or ()] == [
        ("system", "be nice"),
        ("user", "hi there"),
    ]


def test_chat_without_max_tokens_asks_for_the_model_limit_cut_to_fit() -> None:
    client, backend = make_client(max_output_tokens=50)
    client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    [sent] = backend.requests
    assert (sent.max_tokens, sent.max_tokens_is_default) == (50, True)


def test_chat_stream_starts_with_the_role_and_ends_with_a_finish_chunk() -> None:
    client, _ = make_client()
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "max_tokens": 9,
        },
    )
    events = sse_events(response)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Once upon a time"
    assert deltas[-1] == {}
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_failure_mid_stream_is_an_error_event_then_done() -> None:
    client, backend = make_client(FakeGenerationBackend(fail_after=2))
    response = client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "x", "stream": True, "max_tokens": 4}
    )
    events = sse_events(response)
    assert events[-1]["error"]["code"] == "unavailable"
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["Once", " upon"]
    assert backend.closed == 1


def stream_completion(client: TestClient, prompt: str, **headers: str) -> Any:
    body = {"model": MODEL, "prompt": prompt, "stream": True, "max_tokens": 4}
    return client.post("/v1/completions", json=body, headers=headers)


def test_streamed_tokens_are_charged_to_the_caller() -> None:
    client, _ = make_client(gateway={"rate_limits": {"tokens_per_min": 12}})
    # 2 prompt + 4 completion tokens each: two streams spend the 12 of the minute.
    for _ in range(2):
        assert len(sse_events(stream_completion(client, "a b"))) == 5
    refused = stream_completion(client, "a b")
    assert_error(refused, 429)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_stream_that_overspends_the_budget_is_cut_with_an_error_event() -> None:
    client, backend = make_client(gateway={"rate_limits": {"tokens_per_min": 8}})
    # 6 prompt tokens: the first chunk brings the spend to 7, the third to 9 > 8.
    events = sse_events(stream_completion(client, "one two three four five six"))
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["Once", " upon", " a"]
    assert events[-1]["error"]["code"] == "rate_limit_exceeded"
    assert events[-1]["error"]["type"] == "rate_limit_error"
    assert backend.closed == 1


def test_a_stream_has_one_deadline_over_its_whole_life() -> None:
    client, backend = make_client(FakeGenerationBackend(chunk_delay_s=0.3))
    started = time.monotonic()
    events = sse_events(stream_completion(client, "x", **{"x-request-timeout": "0.5"}))
    took_s = time.monotonic() - started
    # The first chunk comes at 0.3 s, the second would come at 0.6 s, past the deadline.
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["Once"]
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    assert events[-1]["error"]["type"] == "timeout_error"
    assert took_s < 2.0
    assert backend.closed == 1


def test_a_failure_before_the_first_chunk_is_a_plain_error_response() -> None:
    client, _ = make_client(FakeGenerationBackend(fail_after=0))
    response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "stream": True})
    assert_error(response, 503)


@pytest.mark.parametrize(
    ("route", "extra", "param"),
    [
        ("/v1/completions", {"n": 17}, "n"),
        ("/v1/chat/completions", {"n": 0}, "n"),
        ("/v1/completions", {"logprobs": 6}, "logprobs"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
        ("/v1/completions", {"presence_penalty": 0.5}, "presence_penalty"),
        ("/v1/completions", {"max_tokens": 65}, "max_tokens"),
        ("/v1/chat/completions", {"max_completion_tokens": 65}, "max_tokens"),
        ("/v1/completions", {"max_tokens": -1}, "max_tokens"),
        ("/v1/chat/completions", {"max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"temperature": 2.5}, "temperature"),
        ("/v1/completions", {"top_p": 0}, "top_p"),
        ("/v1/completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("/v1/completions", {"stop": [""]}, "stop"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
    ],
)
def test_unsupported_or_invalid_options_are_400(
    route: str, extra: dict[str, Any], param: str
) -> None:
    client, backend = make_client()
    if route == "/v1/completions":
        body = {"model": MODEL, "prompt": "x", **extra}
    else:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **extra}
    assert_error(client.post(route, json=body), 400, param)
    assert backend.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "prompt": []},
        {"model": MODEL, "prompt": [[]]},
        {"model": MODEL, "prompt": [3, -1]},
        {"model": MODEL, "prompt": ["a", 1]},
        {"model": MODEL, "prompt": [[1], "a"]},
        {"model": MODEL, "prompt": [1.5]},
        {"model": MODEL},
        {"model": MODEL, "prompt": ["a", "b"], "stream": True},
    ],
)
def test_bad_prompts_are_400(body: dict[str, Any]) -> None:
    client, _ = make_client()
    assert_error(client.post("/v1/completions", json=body), 400)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user", "content": [{"type": "image_url"}]}],
    ],
)
def test_bad_messages_are_400(messages: list[Any]) -> None:
    client, _ = make_client()
    response = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert_error(response, 400)


def test_unknown_model_is_404_and_another_task_is_400() -> None:
    client, _ = make_client()
    missing = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert assert_error(missing, 404, "model")["code"] == "model_not_found"
    wrong = client.post(
        "/v1/chat/completions",
        json={"model": "embedder", "messages": [{"role": "user", "content": "x"}]},
    )
    assert assert_error(wrong, 400, "model")["code"] == "wrong_model_task"


async def _rejected() -> None:
    raise InputRejected("The prompt has 9000 tokens; this model takes at most 4096.", "prompt")


def test_a_replica_rejection_becomes_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        asyncio.run(_translate_failures(_rejected(), MODEL))
    assert caught.value.param == "prompt"
    assert "9000 tokens" in caught.value.message


def test_a_rejection_wrapped_by_ray_becomes_a_400() -> None:
    cause = InputRejected("too long", "max_tokens")
    wrapped = RayTaskError("stream", "traceback", cause).as_instanceof_cause()
    assert isinstance(wrapped, InputRejected)

    async def raise_wrapped() -> None:
        raise wrapped

    with pytest.raises(InvalidRequest) as caught:
        asyncio.run(_translate_failures(raise_wrapped(), MODEL))
    assert (caught.value.message, caught.value.param) == ("too long", "max_tokens")


def test_token_prompts_with_n_echo_and_logprobs_reach_the_model_in_openais_order() -> None:
    client, backend = make_client()
    body = {
        "model": MODEL,
        "prompt": [[5, 6], [7]],
        "n": 2,
        "echo": True,
        "logprobs": 1,
        "max_tokens": 0,
    }
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    sent = backend.requests
    assert [r.prompt_token_ids for r in sent] == [(5, 6), (7,)]
    assert all(
        (r.prompt, r.n, r.echo, r.logprobs, r.max_tokens) == (None, 2, True, 1, 0) for r in sent
    )
    answer = response.json()
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert answer["choices"][0]["logprobs"] == {
        "tokens": [],
        "token_logprobs": [],
        "top_logprobs": [],
        "text_offset": [],
    }
    # Each prompt counted once, however many choices it has.
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({}, None), ({"logprobs": True}, 0), ({"logprobs": True, "top_logprobs": 4}, 4)],
)
def test_chat_logprobs_ask_the_model_for_the_top_alternatives(
    extra: dict[str, Any], expected: int | None
) -> None:
    client, backend = make_client()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    [sent] = backend.requests
    assert sent.logprobs == expected
    assert (response.json()["choices"][0]["logprobs"] is None) == (expected is None)
