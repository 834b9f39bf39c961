"""Generation, classification and aliases through HTTP on one real Serve application.

Tiny random-weight models (tests/support/tiny_models.py): a GPT-2 with a chat template (continuous
batching, the default), the same weights without one (static batches), an nf4 copy, a BERT
classifier and an int8 copy, plus an alias splitting 3:1.
Outputs are compared with the same models run directly in this process.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import torch
from ray import serve
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serve_app.app import build_app
from tests.integration.conftest import ServeCluster
from tests.support.fixtures_models import TinyModels, direct
from tests.support.serve_apps import delete_app, poll
from tests.support.sse import parse_event, parse_events

__all__ = ["direct"]

APP = "gen-service"
PREFIX = "/gen"
GPT = "tiny-gpt2"
PLAIN = "tiny-gpt2-plain"
GPT_NF4 = "tiny-gpt2-nf4"
CLASSIFIER = "tiny-classifier"
CLASSIFIER_INT8 = "tiny-classifier-int8"
ALIAS = "gpt-ab"
PROMPTS = ["The quick brown fox", "Hello world", "Once upon a time"]


@pytest.fixture(scope="module")
def base_url(serve_cluster: ServeCluster, tiny_models: TinyModels) -> Iterator[str]:
    def generation(name: str, path: Any, **extra: Any) -> dict[str, Any]:
        return {"name": name, "task": "generation", "path": str(path), **extra}

    args = {
        "models": [
            generation(GPT, tiny_models.gpt2, max_output_tokens=4000),
            generation(
                PLAIN,
                tiny_models.gpt2_plain,
                max_output_tokens=4000,
                generation_batching="static",
            ),
            generation(GPT_NF4, tiny_models.gpt2, quantization="nf4"),
            {"name": CLASSIFIER, "task": "classification", "path": str(tiny_models.classifier)},
            {
                "name": CLASSIFIER_INT8,
                "task": "classification",
                "path": str(tiny_models.classifier),
                "quantization": "int8",
            },
        ],
        "aliases": [
            {
                "name": ALIAS,
                "targets": [{"model": GPT, "weight": 3}, {"model": PLAIN, "weight": 1}],
            }
        ],
    }
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    try:
        yield f"{serve_cluster.base_url}{PREFIX}"
    finally:
        delete_app(APP)


def greedy(direct: tuple[Any, Any], ids: list[int], max_tokens: int) -> tuple[str, int]:
    model, tokenizer = direct
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    new = out[0, len(ids) :]
    return str(tokenizer.decode(new, skip_special_tokens=True)), len(new)


def prompt_ids(direct: tuple[Any, Any], text: str) -> list[int]:
    ids: list[int] = direct[1](text)["input_ids"]
    return ids


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=120)


def completion(base_url: str, prompt: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    body = {"model": GPT, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
    response = post(f"{base_url}/v1/completions", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def model_handle(name: str) -> Any:
    return serve.get_deployment_handle(name, app_name=APP)


def wait_for_outcome(model: str, request_id: str, timeout_s: float = 30.0) -> Any:
    """How `request_id` ended on `model`'s replica, once it has (None after `timeout_s`)."""
    handle = model_handle(model)
    return poll(lambda: handle.outcome.remote(request_id).result(), timeout_s, poll_s=0.02)


@contextmanager
def batching(model: str, max_batch_size: int, batch_wait_timeout_s: float = 0.02) -> Iterator[Any]:
    """Batch knobs for one test, applied through `reconfigure` as a user_config change is."""
    handle = model_handle(model)
    handle.reconfigure.remote(
        {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
    ).result()
    try:
        yield handle
    finally:
        handle.reconfigure.remote({}).result()


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    started: asyncio.Event | None = None,
) -> list[Any]:
    """A stream's events; `started` is set when the first one arrives."""
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        async for line in response.aiter_lines():
            if line:
                lines.append(line)
                if started is not None:
                    started.set()
    return parse_events(lines)


def streamed_text(events: list[Any]) -> str:
    return "".join(e["choices"][0]["text"] for e in events if e["choices"])


def test_models_list_task_placement_size_and_quantization_agreement(base_url: str) -> None:
    listed = httpx.get(f"{base_url}/v1/models", timeout=60).json()["data"]
    cards = {entry["id"]: entry for entry in listed}
    assert set(cards) == {GPT, PLAIN, GPT_NF4, CLASSIFIER, CLASSIFIER_INT8, ALIAS}
    for name in (GPT, PLAIN, GPT_NF4, CLASSIFIER, CLASSIFIER_INT8):
        card = cards[name]
        assert card["ready"] is True
        assert card["device"] == "cpu"
        assert card["dtype"] == "float32"
        assert card["parameters"] > 0
        assert card["memory_bytes"] > 0
    assert {cards[n]["task"] for n in (GPT, PLAIN, GPT_NF4)} == {"generation"}
    assert cards[CLASSIFIER]["labels"] == ["negative", "neutral", "positive"]
    assert cards[GPT]["quantization"] == "none"
    assert cards[GPT]["quantization_agreement"] is None
    assert cards[GPT]["chat_template"] == "tokenizer"
    assert cards[PLAIN]["chat_template"] == "plain"
    assert cards[GPT]["batching"]["mode"] == "continuous"
    assert cards[GPT]["batching"]["kv_cache_tokens"] == 16 * 2048  # 16 x min(4096, 2048)
    assert cards[PLAIN]["batching"]["mode"] == "static"
    # Quantized: the same model counted the same, stored smaller, and checked against fp32.
    assert cards[GPT_NF4]["parameters"] == cards[GPT]["parameters"]
    assert cards[GPT_NF4]["memory_bytes"] < cards[GPT]["memory_bytes"]
    assert cards[CLASSIFIER_INT8]["memory_bytes"] < cards[CLASSIFIER]["memory_bytes"]
    nf4 = cards[GPT_NF4]["quantization_agreement"]
    assert nf4["quantization"] == "nf4"
    assert nf4["reference_dtype"] == "float32"
    assert 0 < nf4["top1_agreement"] <= 1
    assert 0 < nf4["mean_logit_cosine"] <= 1
    int8 = cards[CLASSIFIER_INT8]["quantization_agreement"]
    assert int8["quantization"] == "int8"
    assert 0 < int8["label_agreement"] <= 1
    assert 0 <= int8["max_prob_diff"] < 1
    assert cards[ALIAS]["alias_of"][0] == {"model": GPT, "weight": 3.0, "share": 0.75}


def test_concurrent_greedy_completions_equal_direct_generate(
    base_url: str, direct: tuple[Any, Any]
) -> None:
    budgets = [7, 12, 3]

    async def send_all() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{base_url}/v1/completions",
                        json={"model": GPT, "prompt": p, "max_tokens": n, "temperature": 0},
                    )
                    for p, n in zip(PROMPTS, budgets, strict=True)
                )
            )
        return [r.json() for r in responses]

    for body, prompt, budget in zip(asyncio.run(send_all()), PROMPTS, budgets, strict=True):
        ids = prompt_ids(direct, prompt)
        text, generated = greedy(direct, ids, budget)
        [choice] = body["choices"]
        assert choice["text"] == text
        assert choice["finish_reason"] == "length"
        assert body["usage"] == {
            "prompt_tokens": len(ids),
            "completion_tokens": generated,
            "total_tokens": len(ids) + generated,
        }


def test_stop_sequence_ends_the_text_with_finish_reason_stop(
    base_url: str, direct: tuple[Any, Any]
) -> None:
    full, _ = greedy(direct, prompt_ids(direct, PROMPTS[0]), 24)
    stop = full[8:11]
    body = completion(base_url, PROMPTS[0], 24, stop=[stop, "never-appears"])
    [choice] = body["choices"]
    assert choice["text"] == full[: full.index(stop)]
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 24


def test_seeded_sampling_repeats_and_differs_by_seed(base_url: str) -> None:
    def sample(seed: int) -> str:
        body = completion(base_url, "Hello", 16, temperature=1.0, top_p=0.9, seed=seed)
        text: str = body["choices"][0]["text"]
        return text

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_chat_uses_the_tokenizer_template_or_the_plain_one(
    base_url: str, direct: tuple[Any, Any]
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    tokenizer = direct[1]
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    plain = "System: Be brief.\nUser: Hi!\nAssistant:"
    for model, prompt in ((GPT, templated), (PLAIN, plain)):
        response = post(
            f"{base_url}/v1/chat/completions",
            {"model": model, "messages": messages, "max_tokens": 6, "temperature": 0},
        )
        body = response.json()
        ids = tokenizer(prompt, add_special_tokens=model == PLAIN)["input_ids"]
        text, _ = greedy(direct, ids, 6)
        assert body["object"] == "chat.completion"
        assert body["model"] == model
        assert body["usage"]["prompt_tokens"] == len(ids)
        assert body["choices"][0]["message"] == {"role": "assistant", "content": text}
        assert body["choices"][0]["finish_reason"] == "length"


def test_static_streams_share_a_batch_and_match_non_streamed_greedy(
    base_url: str, direct: tuple[Any, Any]
) -> None:
    async def two_streams() -> list[list[Any]]:
        async with httpx.AsyncClient(timeout=120) as client:
            return list(
                await asyncio.gather(
                    *(
                        read_sse(
                            client,
                            f"{base_url}/v1/completions",
                            {
                                "model": PLAIN,
                                "prompt": p,
                                "max_tokens": 10,
                                "temperature": 0,
                                "stream": True,
                            },
                        )
                        for p in PROMPTS[:2]
                    )
                )
            )

    with batching(PLAIN, max_batch_size=2, batch_wait_timeout_s=5.0) as handle:
        streams = asyncio.run(two_streams())
        outcomes = [handle.outcome.remote(events[0]["id"]).result() for events in streams]
    for events, prompt in zip(streams, PROMPTS[:2], strict=True):
        assert streamed_text(events) == greedy(direct, prompt_ids(direct, prompt), 10)[0]
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert len(events) > 2  # tokens arrived as several chunks, not one
    assert outcomes[0].batch_id is not None
    assert outcomes[0].batch_id == outcomes[1].batch_id  # one generate served both


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_a_client_that_disconnects_frees_its_row_and_the_batch_goes_on(
    base_url: str, direct: tuple[Any, Any], mode: str
) -> None:
    model = GPT if mode == "continuous" else PLAIN
    leaver = {"model": model, "prompt": PROMPTS[0], "max_tokens": 3500, "temperature": 0}
    stayer = {"model": model, "prompt": PROMPTS[1], "max_tokens": 1500, "temperature": 0}
    url = f"{base_url}/v1/completions"

    async def first_chunk_then_leave(client: httpx.AsyncClient) -> Any:
        async with client.stream("POST", url, json={**leaver, "stream": True}) as response:
            async for line in response.aiter_lines():
                if line:
                    return parse_event(line)  # closes the connection
        raise AssertionError("no chunk arrived")

    async def leave_and_await_its_outcome(client: httpx.AsyncClient) -> tuple[Any, Any, float]:
        first = await first_chunk_then_leave(client)
        left = await asyncio.to_thread(wait_for_outcome, model, first["id"])
        return first, left, time.monotonic()

    async def both() -> tuple[tuple[Any, Any, float], tuple[list[Any], float]]:
        async with httpx.AsyncClient(timeout=300) as client:
            leaver_side, stayer_side = await asyncio.gather(
                leave_and_await_its_outcome(client), sse_and_end_time(client, url, stayer)
            )
        return leaver_side, stayer_side

    with batching(model, max_batch_size=2, batch_wait_timeout_s=5.0) as handle:
        (first, left, left_ended_at), (stayer_events, stayer_done) = asyncio.run(both())
        stayed = handle.outcome.remote(stayer_events[0]["id"]).result()
    # The replica ended the leaver's row while its companion was still generating.
    assert left_ended_at < stayer_done
    assert first["choices"][0]["finish_reason"] is None
    # The first chunk reached the client while its generation was still running: when the
    # client left, the row was dropped long before its 3500 tokens.
    assert left.finish_reason == "cancelled"
    assert left.completion_tokens < 3500
    # A static batch holds both rows; a continuous one has no batch ids.
    assert left.batch_id == stayed.batch_id
    assert (left.batch_id is None) == (mode == "continuous")
    # Its batch companion went on to the end, unaffected.
    text, generated = greedy(direct, prompt_ids(direct, PROMPTS[1]), 1500)
    assert streamed_text(stayer_events) == text
    assert (stayed.finish_reason, stayed.completion_tokens) == ("length", generated)


async def sse_and_end_time(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    started: asyncio.Event | None = None,
) -> tuple[list[Any], float]:
    """A stream's events (`read_sse`) and when it ended (monotonic clock)."""
    events = await read_sse(client, url, {**body, "stream": True}, started)
    return events, time.monotonic()


def test_a_request_joins_a_running_continuous_batch_and_leaves_before_it(
    base_url: str, direct: tuple[Any, Any]
) -> None:
    """The point of continuous batching: a short request that comes while a long one runs
    starts at the next step and ends first, instead of waiting for the long one's batch."""
    url = f"{base_url}/v1/completions"
    long = {"model": GPT, "prompt": PROMPTS[0], "max_tokens": 1500, "temperature": 0}
    short = {"model": GPT, "prompt": PROMPTS[1], "max_tokens": 5, "temperature": 0}

    async def run() -> tuple[tuple[list[Any], float], dict[str, Any], float]:
        async with httpx.AsyncClient(timeout=300) as client:
            started = asyncio.Event()
            running = asyncio.create_task(sse_and_end_time(client, url, long, started))
            await started.wait()  # the long one is generating
            response = await client.post(url, json=short)
            short_done = time.monotonic()
            return await running, response.json(), short_done

    (events, long_done), short_body, short_done = asyncio.run(run())
    assert short_done < long_done
    text, _ = greedy(direct, prompt_ids(direct, PROMPTS[1]), 5)
    assert short_body["choices"][0]["text"] == text
    # Sharing steps with a request that joined later leaves the long one's text unchanged.
    assert streamed_text(events) == greedy(direct, prompt_ids(direct, PROMPTS[0]), 1500)[0]


def test_continuous_max_batch_size_admits_that_many_and_applies_live(base_url: str) -> None:
    url = f"{base_url}/v1/completions"
    bodies = [{"model": GPT, "prompt": p, "max_tokens": 200, "temperature": 0} for p in PROMPTS[:2]]

    async def both() -> list[list[Any]]:
        async with httpx.AsyncClient(timeout=300) as client:
            streams = (read_sse(client, url, {**b, "stream": True}) for b in bodies)
            return list(await asyncio.gather(*streams))

    def batch_sizes_of_both() -> list[int]:
        # The replica records, per request, how many ran in the batch when it ended.
        handle = model_handle(GPT)
        handle.reset_batch_sizes.remote().result()
        streams = asyncio.run(both())
        assert [e[-1]["choices"][0]["finish_reason"] for e in streams] == ["length", "length"]
        sizes: list[int] = handle.batch_sizes.remote().result()
        return sizes

    with batching(GPT, max_batch_size=1):
        assert batch_sizes_of_both() == [1, 1]  # one at a time: the second waited its turn
    assert batch_sizes_of_both() == [2, 1]  # back to 16: both ran at once


def test_quantized_generation_answers(base_url: str) -> None:
    response = post(
        f"{base_url}/v1/completions",
        {"model": GPT_NF4, "prompt": "Hello", "max_tokens": 8, "temperature": 0},
    )
    body = response.json()
    assert body["model"] == GPT_NF4
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8


def test_classification_equals_the_model_run_directly(
    base_url: str, tiny_models: TinyModels
) -> None:
    texts = ["I love this!", "This is terrible.", "It is fine, I guess."]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models.classifier))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_models.classifier))
    with torch.inference_mode():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        expected = model(**encoded).logits.softmax(dim=-1)
    body = post(f"{base_url}/v1/classify", {"model": CLASSIFIER, "input": texts}).json()
    assert body["model"] == CLASSIFIER
    for item, row in zip(body["data"], expected, strict=True):
        assert list(item["scores"]) == ["negative", "neutral", "positive"]
        assert list(item["scores"].values()) == pytest.approx(row.tolist(), abs=1e-5)
        assert item["label"] == model.config.id2label[int(row.argmax())]
        assert item["score"] == pytest.approx(float(row.max()), abs=1e-5)
    quantized = post(f"{base_url}/v1/classify", {"model": CLASSIFIER_INT8, "input": texts}).json()
    for item in quantized["data"]:
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert item["label"] in item["scores"]


def test_alias_splits_traffic_by_weight(base_url: str) -> None:
    requests = 80

    async def send_all() -> list[str]:
        async with httpx.AsyncClient(timeout=120) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{base_url}/v1/completions",
                        json={"model": ALIAS, "prompt": "Hi", "max_tokens": 1},
                    )
                    for _ in range(requests)
                )
            )
        return [r.json()["model"] for r in responses]

    answered = Counter(asyncio.run(send_all()))
    assert set(answered) == {GPT, PLAIN}
    # Binomial(80, 0.25): mean 20, sd 3.9; [8, 34] is more than 3 sd either way.
    assert 8 <= answered[PLAIN] <= 34


@pytest.mark.parametrize(
    ("route", "body", "status", "code"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model_not_found"),
        ("/v1/completions", {"model": CLASSIFIER, "prompt": "x"}, 400, "wrong_model_task"),
        ("/v1/classify", {"model": GPT, "input": "x"}, 400, "wrong_model_task"),
        ("/v1/completions", {"model": GPT, "prompt": "x", "n": 17}, 400, "invalid_request"),
        # Refused by the replica (it holds the tokenizer), still a 400, streamed or not:
        ("/v1/completions", {"model": GPT, "prompt": "Hello " * 3000}, 400, "invalid_request"),
        (
            "/v1/completions",
            {"model": GPT, "prompt": "Hello " * 1200, "max_tokens": 2000, "stream": True},
            400,
            "invalid_request",
        ),
    ],
)
def test_errors_are_openai_shaped(
    base_url: str, route: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = post(f"{base_url}{route}", body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
