"""Logprobs, echo, n choices and token-id prompts through HTTP, on continuous batching (the tiny
GPT-2) and static batches (the same weights without a chat template), against a direct forward
of the same weights in this process."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import torch

from tests.integration.conftest import TINY_GPT2 as CONTINUOUS
from tests.integration.conftest import TINY_GPT2_STATIC as STATIC
from tests.support.fixtures_models import direct
from tests.support.sse import parse_events

__all__ = ["direct"]

BOTH = pytest.mark.parametrize("model", [CONTINUOUS, STATIC])
TOLERANCE = 1e-4
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def base_url(tiny_gpt2_url: str) -> str:
    return tiny_gpt2_url


def logprobs_of(direct: tuple[Any, Any], ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1, vocab): row i is the log-softmax predicting ids[i + 1]."""
    with torch.inference_mode():
        logits = direct[0](input_ids=torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


def greedy_ids(direct: tuple[Any, Any], ids: list[int], max_tokens: int) -> list[int]:
    with torch.inference_mode():
        out = direct[0].generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return [int(i) for i in out[0, len(ids) :]]


def post(base_url: str, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/{route}", json=body, timeout=120)


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@BOTH
def test_completion_logprobs_are_the_raw_log_softmax(
    base_url: str, direct: tuple[Any, Any], model: str
) -> None:
    tokenizer = direct[1]
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    body = {"model": model, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
    [choice] = ok(post(base_url, "completions", body))["choices"]
    generated = greedy_ids(direct, prompt_ids, 6)
    expected = logprobs_of(direct, prompt_ids + generated)[len(prompt_ids) - 1 :]
    logprobs = choice["logprobs"]
    assert choice["text"] == tokenizer.decode(generated)
    assert logprobs["tokens"] == [tokenizer.decode([i]) for i in generated]
    for position, token_id in enumerate(generated):
        row = expected[position]
        assert logprobs["token_logprobs"][position] == pytest.approx(
            float(row[token_id]), abs=TOLERANCE
        )
        values, ids = torch.topk(row, 3)
        top = logprobs["top_logprobs"][position]
        expected_top: dict[str, float] = {}
        for token_id_, value in zip(ids.tolist(), values.tolist(), strict=True):
            expected_top.setdefault(tokenizer.decode([token_id_]), value)  # the likelier stays
        for text, value in expected_top.items():
            assert top[text] == pytest.approx(value, abs=TOLERANCE)
    lengths = [len(token) for token in logprobs["tokens"]]
    assert logprobs["text_offset"] == [sum(lengths[:i]) for i in range(len(lengths))]


@BOTH
def test_echo_scores_token_prompts_as_evaluation_clients_ask(
    base_url: str, direct: tuple[Any, Any], model: str
) -> None:
    """lm-eval's loglikelihood request: token ids, echo, logprobs 1, max_tokens 0 or 1."""
    tokenizer = direct[1]
    prompts = [tokenizer(text)["input_ids"] for text in (PROMPT, "Hello world, again")]
    for max_tokens in (0, 1):
        body = {
            "model": model,
            "prompt": prompts,
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": 1,
            "echo": True,
            "seed": 1234,
        }
        answer = ok(post(base_url, "completions", body))
        assert [c["index"] for c in answer["choices"]] == [0, 1]
        completion_tokens = 0
        for ids, choice in zip(prompts, answer["choices"], strict=True):
            logprobs = choice["logprobs"]
            assert choice["text"].startswith(tokenizer.decode(ids))
            assert len(logprobs["tokens"]) == len(ids) + max_tokens
            assert logprobs["token_logprobs"][0] is None
            assert logprobs["top_logprobs"][0] is None
            expected = logprobs_of(direct, ids)
            for position in range(1, len(ids)):
                got = logprobs["token_logprobs"][position]
                assert got == pytest.approx(
                    float(expected[position - 1, ids[position]]), abs=TOLERANCE
                )
            completion_tokens += max_tokens
        assert answer["usage"]["prompt_tokens"] == sum(len(ids) for ids in prompts)
        assert answer["usage"]["completion_tokens"] == completion_tokens


@BOTH
def test_n_choices_differ_repeat_with_a_seed_and_count_the_prompt_once(
    base_url: str, model: str
) -> None:
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": 12,
        "temperature": 1.0,
        "n": 4,
        "seed": 7,
    }
    first, again = (ok(post(base_url, "completions", body)) for _ in range(2))
    texts = [choice["text"] for choice in first["choices"]]
    assert [choice["index"] for choice in first["choices"]] == [0, 1, 2, 3]
    assert texts == [choice["text"] for choice in again["choices"]]
    assert len(set(texts)) > 1
    single = ok(post(base_url, "completions", {**body, "n": 1}))
    assert single["choices"][0]["text"] == texts[0]  # choice 0 keeps the seed itself
    usage = first["usage"]
    assert usage["prompt_tokens"] == single["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 48


@BOTH
def test_streamed_choices_carry_their_index_and_the_same_logprobs(
    base_url: str, model: str
) -> None:
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": 8,
        "temperature": 0.8,
        "seed": 3,
        "n": 2,
        "logprobs": 2,
        "echo": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = post(base_url, "completions", body)
    assert response.status_code == 200, response.text
    events = parse_events(response.text)
    whole = ok(post(base_url, "completions", {**body, "stream": False, "stream_options": None}))
    for choice in whole["choices"]:
        parts = [e["choices"][0] for e in events if e["choices"]]
        mine = [part for part in parts if part["index"] == choice["index"]]
        assert "".join(part["text"] for part in mine) == choice["text"]
        streamed = [
            value for part in mine for value in (part["logprobs"] or {}).get("token_logprobs", [])
        ]
        assert streamed == choice["logprobs"]["token_logprobs"]
        offsets = [o for part in mine for o in (part["logprobs"] or {}).get("text_offset", [])]
        assert offsets == choice["logprobs"]["text_offset"]
        assert mine[-1]["finish_reason"] == "length"
    assert events[-1]["usage"] == whole["usage"]


@BOTH
def test_chat_logprobs_with_the_openai_client(
    base_url: str, direct: tuple[Any, Any], model: str
) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Tell me a story."}]
    result = client.chat.completions.create(
        model=model, messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    [choice] = result.choices
    assert choice.logprobs is not None
    content = choice.logprobs.content
    assert content is not None
    assert "".join(token.token for token in content) == choice.message.content
    for token in content:
        assert bytes(token.bytes or []) == token.token.encode()
        assert [alt.logprob for alt in token.top_logprobs] == sorted(
            (alt.logprob for alt in token.top_logprobs), reverse=True
        )
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=TOLERANCE)
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    )
    streamed = [
        token.logprob
        for chunk in stream
        for c in chunk.choices
        if c.logprobs is not None and c.logprobs.content
        for token in c.logprobs.content
    ]
    assert streamed == [token.logprob for token in content]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [1, 2, 10**6]}, "prompt"),
        ({"prompt": "x", "n": 17}, "n"),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ],
)
def test_out_of_range_is_400_naming_the_param(
    base_url: str, body: dict[str, Any], param: str
) -> None:
    response = post(base_url, "completions", {"model": CONTINUOUS, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
