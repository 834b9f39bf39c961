"""The official `openai` client against the service: completions, chat, and chat streaming."""

from __future__ import annotations

from typing import Any

import openai
import pytest
import torch

from tests.integration.conftest import TINY_GPT2 as MODEL
from tests.support.fixtures_models import direct

__all__ = ["direct"]


@pytest.fixture(scope="module")
def client(tiny_gpt2_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_gpt2_url}/v1", api_key="unused", max_retries=0)


def greedy(direct: tuple[Any, Any], ids: list[int], max_tokens: int) -> str:
    model, tokenizer = direct
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


MESSAGES: list[Any] = [{"role": "user", "content": "Tell me a story."}]


def chat_prompt_ids(direct: tuple[Any, Any]) -> list[int]:
    tokenizer = direct[1]
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def test_completions(client: openai.OpenAI, direct: tuple[Any, Any]) -> None:
    result = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=9, temperature=0
    )
    ids = direct[1]("Once upon a time")["input_ids"]
    assert result.object == "text_completion"
    assert result.model == MODEL
    assert result.choices[0].text == greedy(direct, ids, 9)
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (len(ids), 9)


def test_chat_completions(client: openai.OpenAI, direct: tuple[Any, Any]) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=7, temperature=0
    )
    [choice] = result.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == greedy(direct, chat_prompt_ids(direct), 7)
    assert choice.finish_reason == "length"
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(chat_prompt_ids(direct))


def test_chat_streaming(client: openai.OpenAI, direct: tuple[Any, Any]) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == greedy(direct, chat_prompt_ids(direct), 12)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert set(finishes[:-1]) == {None}
    assert len(finishes) > 3  # several content chunks, not one
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_client_errors_map_to_openai_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="missing", prompt="x")
    with pytest.raises(openai.BadRequestError, match="'n'"):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=17)
