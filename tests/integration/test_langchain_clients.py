"""LangChain's OpenAI integrations against the service, at their defaults: `ChatOpenAI`
(invoke and stream) and `OpenAI` (completions, several prompts in one call)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI, OpenAI
from pydantic import SecretStr

from tests.integration.conftest import TINY_GPT2 as MODEL
from tests.support.fixtures_models import direct

__all__ = ["direct"]

QUESTION = "Tell me a story."


@pytest.fixture(scope="module")
def base_url(tiny_gpt2_url: str) -> str:
    return f"{tiny_gpt2_url}/v1"


def greedy(direct: tuple[Any, Any], text: str, max_tokens: int) -> str:
    model, tokenizer = direct
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))


def chat_prompt(direct: tuple[Any, Any]) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    text: str = direct[1].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def chat_model(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=base_url,
        api_key=SecretStr("unused"),
        temperature=0,
        max_completion_tokens=7,
        max_retries=0,
    )


def test_chat_openai_invoke(base_url: str, direct: tuple[Any, Any]) -> None:
    answer = chat_model(base_url).invoke([HumanMessage(QUESTION)])
    assert answer.content == greedy(direct, chat_prompt(direct), 7)
    assert answer.response_metadata["finish_reason"] == "length"
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == 7


def test_chat_openai_stream(base_url: str, direct: tuple[Any, Any]) -> None:
    chunks = list(chat_model(base_url).stream([HumanMessage(QUESTION)]))
    assert "".join(str(chunk.content) for chunk in chunks) == greedy(direct, chat_prompt(direct), 7)


def test_openai_completions_batch(base_url: str, direct: tuple[Any, Any]) -> None:
    llm = OpenAI(
        model=MODEL,
        base_url=base_url,
        api_key=SecretStr("unused"),
        temperature=0,
        max_tokens=6,
        max_retries=0,
    )
    prompts = ["Once upon a time", "The quick brown fox"]
    result = llm.generate(prompts)
    texts = [generations[0].text for generations in result.generations]
    assert texts == [greedy(direct, prompt, 6) for prompt in prompts]
