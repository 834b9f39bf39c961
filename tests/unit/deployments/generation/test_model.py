"""The causal LM behind the generation deployment, without Ray: one `generate` per batch that
matches plain `model.generate`, per-request limits, stops, seeds, cancellation and rejections."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from deployments.contract import (
    ChatMessage,
    GenerationChunk,
    GenerationRequest,
    InputRejected,
    SamplingParams,
)
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from tests.support.fixtures_generation import GREEDY, PROMPTS, direct_greedy, model
from tests.support.fixtures_models import tiny_models

__all__ = ["model", "tiny_models"]


@dataclass
class Collected:
    chunks: dict[int, list[GenerationChunk]] = field(default_factory=dict)
    steps: int = 0

    def __call__(self, updates: list[GenerationChunk | None]) -> None:
        self.steps += 1
        for index, chunk in enumerate(updates):
            if chunk is not None:
                self.chunks.setdefault(index, []).append(chunk)

    def text(self, index: int) -> str:
        return "".join(chunk.text for chunk in self.chunks.get(index, []))

    def last(self, index: int) -> GenerationChunk:
        return self.chunks[index][-1]


def request(prompt: str, max_tokens: int = 12, stop: tuple[str, ...] = ()) -> GenerationRequest:
    return GenerationRequest(
        request_id=prompt, prompt=prompt, max_tokens=max_tokens, sampling=GREEDY, stop=stop
    )


def run(
    model: GenerationModel, *requests: GenerationRequest
) -> tuple[Collected, list[RowProgress]]:
    collected = Collected()
    rows = model.run_batch([model.prepare(r) for r in requests], collected)
    return collected, rows


def test_batched_greedy_equals_plain_generate_per_prompt(model: GenerationModel) -> None:
    budgets = [12, 5, 20]
    collected, rows = run(model, *(request(p, n) for p, n in zip(PROMPTS, budgets, strict=True)))
    for index, (prompt, budget) in enumerate(zip(PROMPTS, budgets, strict=True)):
        text, generated = direct_greedy(model, prompt, budget)
        assert collected.text(index) == text
        assert rows[index].completion_tokens == generated == budget
        last = collected.last(index)
        assert last.finish_reason == "length"
        assert last.completion_tokens == budget
        assert last.prompt_tokens == len(model.tokenizer(prompt)["input_ids"])
    # One generate call: it ran for the largest budget, and text arrived step by step.
    assert collected.steps <= max(budgets) + 1
    assert len(collected.chunks[2]) > 1


def test_stop_sequence_cuts_the_text_and_finishes_with_stop(model: GenerationModel) -> None:
    full, _ = direct_greedy(model, PROMPTS[0], 20)
    stop = full[6:9]
    expected = full[: full.index(stop)]
    collected, rows = run(model, request(PROMPTS[0], 20, stop=(stop,)))
    assert collected.text(0) == expected
    assert collected.last(0).finish_reason == "stop"
    assert rows[0].completion_tokens < 20


def test_eos_finishes_with_stop_and_is_not_in_the_text(model: GenerationModel) -> None:
    eos = model.tokenizer.eos_token_id
    job = GenerationJob("eos", [5, 6], max_tokens=10, sampling=GREEDY, stop=())
    row = RowProgress(job, model.tokenizer, {eos})
    first = model.tokenizer("ab")["input_ids"]
    assert [row.advance(t) for t in first][-1] is not None
    last = row.advance(eos)
    assert last is not None
    assert last.finish_reason == "stop"
    assert last.completion_tokens == len(first) + 1
    assert last.text == ""


def test_seeded_sampling_repeats_whatever_shares_the_batch(model: GenerationModel) -> None:
    sampled = GenerationRequest(
        "s", max_tokens=15, prompt="Hello", sampling=SamplingParams(1.0, 0.95, 42)
    )
    alone, _ = run(model, sampled)
    shared, _ = run(model, request(PROMPTS[0], 15), sampled)
    assert alone.text(0) == shared.text(1)
    other_seed = GenerationRequest(
        "t", max_tokens=15, prompt="Hello", sampling=SamplingParams(1.0, 0.95, 43)
    )
    assert run(model, other_seed)[0].text(0) != alone.text(0)


def test_a_cancelled_row_stops_and_the_others_go_on(model: GenerationModel) -> None:
    jobs = [model.prepare(request(PROMPTS[0], 40)), model.prepare(request(PROMPTS[1], 40))]
    collected = Collected()

    def cancel_after_three_chunks(updates: list[GenerationChunk | None]) -> None:
        collected(updates)
        if len(collected.chunks.get(0, [])) == 3:
            jobs[0].cancel()

    finished: list[str] = []
    rows = model.run_batch(
        jobs, cancel_after_three_chunks, on_finish=lambda r: finished.append(r.job.request_id)
    )
    assert rows[0].finish_reason == "cancelled"
    assert rows[0].completion_tokens < 40
    assert rows[1].finish_reason == "length"
    assert collected.text(1) == direct_greedy(model, PROMPTS[1], 40)[0]
    assert finished == [PROMPTS[0], PROMPTS[1]]  # the cancelled row is reported when it stops


def test_limits_are_checked_before_a_batch(model: GenerationModel) -> None:
    context = model.context_tokens
    with pytest.raises(InputRejected, match="maximum context length") as caught:
        model.prepare(request("Hello", context))
    assert caught.value.param == "max_tokens"
    clamped = model.prepare(
        GenerationRequest("d", max_tokens=context, prompt="Hello", max_tokens_is_default=True)
    )
    assert clamped.max_tokens == context - len(clamped.prompt_ids)
    with pytest.raises(InputRejected, match="at most") as too_long:
        model.prepare(request("Hello " * context, 1))
    assert too_long.value.param == "prompt"
    assert model.prepare(request("", 3)).prompt_ids == [model.tokenizer.bos_token_id]


def test_rejection_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(InputRejected("too long", param="prompt")))
    assert (error.message, error.param, str(error)) == ("too long", "prompt", "too long")


def test_chat_prompt_tokens_come_from_the_template(model: GenerationModel) -> None:
    messages = (ChatMessage("user", "Hi there"),)
    chat = GenerationRequest("c", max_tokens=3, messages=messages)
    rendered = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert (
        model.prompt_ids(chat) == model.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )


def test_next_token_logits_cover_every_real_position(model: GenerationModel) -> None:
    logits = model.next_token_logits(PROMPTS)
    positions = sum(len(model.tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert logits.shape == (positions, len(model.tokenizer))
    assert logits.dtype == torch.float32


def test_describe_reports_placement_and_size(model: GenerationModel) -> None:
    card = model.describe()
    assert card["device"] == "cpu"
    assert card["dtype"] == "float32"
    assert card["quantization"] == "none"
    assert card["chat_template"] == "tokenizer"
    assert card["context_tokens"] == 4096
    parameters = sum(p.numel() for p in model.model.parameters())
    assert card["parameters"] == parameters
    assert card["memory_bytes"] == 4 * parameters  # fp32, no buffers
