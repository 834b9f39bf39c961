"""Token logprobs on the replica, against a direct forward of the same weights: log-softmax of
the raw logits, whatever the temperature, for prompts (echo) and generated tokens, in a static
batch's `generate` and in the continuous batching loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
import torch

from deployments.contract import GenerationChunk, GenerationRequest, SamplingParams, TokenLogprob
from deployments.generation.continuous_batcher import ContinuousBatcher
from deployments.generation.logprobs import scoring_passes
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from deployments.loading.source import ModelSource
from deployments.replica.observation import BatchObserver
from tests.support.fixtures_generation import GREEDY, PROMPTS, model
from tests.support.fixtures_models import TinyModels, tiny_models

__all__ = ["model", "tiny_models"]

TOLERANCE = 1e-4
SAMPLED = SamplingParams(temperature=1.7, top_p=0.8, seed=11)


def reference(model: GenerationModel, ids: Sequence[int]) -> torch.Tensor:
    """(len(ids) - 1, vocab): log-softmax at each position of one unpadded forward."""
    with torch.inference_mode():
        logits = model.model(input_ids=torch.tensor([list(ids)])).logits[0, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


def assert_matches(
    model: GenerationModel, ids: Sequence[int], scored: Sequence[TokenLogprob], start: int, k: int
) -> None:
    """`scored[i]` is token `ids[start + i]`: its logprob and its position's top `k`."""
    expected = reference(model, ids)
    for offset, token in enumerate(scored):
        position = start + offset
        row = expected[position - 1]
        assert token.token == model.tokenizer.decode([ids[position]])
        assert token.logprob == pytest.approx(float(row[ids[position]]), abs=TOLERANCE)
        values, top_ids = torch.topk(row, k)
        assert [value for _, value in token.top] == pytest.approx(values.tolist(), abs=TOLERANCE)
        assert [text for text, _ in token.top] == [
            model.tokenizer.decode([i]) for i in top_ids.tolist()
        ]


def prepared(
    model: GenerationModel, prompt: str, max_tokens: int, sampling: SamplingParams, k: int
) -> GenerationJob:
    request = GenerationRequest(
        prompt, prompt=prompt, max_tokens=max_tokens, sampling=sampling, logprobs=k
    )
    return model.prepare(request)


def whole(chunks: Sequence[GenerationChunk]) -> GenerationChunk:
    return GenerationChunk.joined(chunks)


def generated_ids(row: RowProgress) -> list[int]:
    assert row.capture is not None
    return [step.token_id for step in row.capture.steps[: row.completion_tokens]]


def test_prompt_scores_equal_a_direct_forward_in_one_right_padded_pass(
    model: GenerationModel,
) -> None:
    jobs = [
        prepared(model, prompt, 1, GREEDY, k) for prompt, k in zip(PROMPTS, (0, 3, 5), strict=True)
    ]
    scored = model.score_prompts(jobs)
    for job, tokens in zip(jobs, scored, strict=True):
        assert len(tokens) == len(job.prompt_ids)
        assert tokens[0].logprob is None
        assert tokens[0].top == ()
        assert_matches(model, job.prompt_ids, tokens[1:], 1, job.logprobs or 0)


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_static_batch_scores_generated_tokens_with_the_raw_logits(
    model: GenerationModel, sampling: SamplingParams
) -> None:
    jobs = [prepared(model, prompt, 8, sampling, 2) for prompt in PROMPTS]
    got: list[list[GenerationChunk]] = [[] for _ in jobs]

    def collect(updates: list[GenerationChunk | None]) -> None:
        for row, update in enumerate(updates):
            if update is not None:
                got[row].append(update)

    rows = model.run_batch(jobs, collect)
    for job, chunks, row in zip(jobs, got, rows, strict=True):
        answer = whole(chunks)
        assert len(answer.logprobs) == answer.completion_tokens == 8
        ids = [*job.prompt_ids, *generated_ids(row)]
        # Left-padded rows with a KV cache, against one unpadded forward.
        assert_matches(model, ids, answer.logprobs, len(job.prompt_ids), 2)
        if sampling.greedy:
            assert all(token.logprob == token.top[0][1] for token in answer.logprobs)


@dataclass
class Loop:
    batcher: ContinuousBatcher
    model: GenerationModel  # the loop's own copy of the weights
    finished: list[RowProgress]


@pytest.fixture(scope="module")
def loop(tiny_models: TinyModels) -> Iterator[Loop]:
    own = GenerationModel(ModelSource(path=str(tiny_models.gpt2), device="cpu"))
    finished: list[RowProgress] = []
    batcher = ContinuousBatcher(own, 8, None, BatchObserver("test-logprobs"), finished.append)
    batcher.warm_up([5, 6, 7])
    yield Loop(batcher, own, finished)
    batcher.stop()


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_continuous_batching_scores_generated_tokens_with_the_raw_logits(
    loop: Loop, model: GenerationModel, sampling: SamplingParams
) -> None:
    batcher = loop.batcher
    jobs = [prepared(model, prompt, 8, sampling, 3) for prompt in PROMPTS]

    async def run(job: GenerationJob) -> GenerationChunk:
        return whole([chunk async for chunk in batcher.stream(job)])

    async def all_at_once() -> list[GenerationChunk]:
        return list(await asyncio.gather(*(run(job) for job in jobs)))

    for job, answer in zip(jobs, asyncio.run(all_at_once()), strict=True):
        assert len(answer.logprobs) == answer.completion_tokens == 8
        [row] = [row for row in loop.finished if row.job is job]
        ids = [*job.prompt_ids, *generated_ids(row)]
        assert_matches(model, ids, answer.logprobs, len(job.prompt_ids), 3)


def test_prompt_scores_beside_a_running_loop_on_the_same_model(
    loop: Loop, model: GenerationModel
) -> None:
    """Echo scores prompts on the replica's one model while the loop decodes other rows."""
    batcher, own = loop.batcher, loop.model
    jobs = [prepared(model, prompt, 1, GREEDY, 2) for prompt in PROMPTS]
    scores: list[list[tuple[TokenLogprob, ...]]] = []
    busy = threading.Event()

    async def decode_meanwhile() -> None:
        long = prepared(model, PROMPTS[2], 200, SAMPLED, 0)
        async for _ in batcher.stream(long):
            busy.set()

    def score() -> None:
        busy.wait(timeout=30)
        scores.extend(own.score_prompts(jobs) for _ in range(5))

    async def both() -> None:
        await asyncio.gather(decode_meanwhile(), asyncio.to_thread(score))

    asyncio.run(both())
    for scored in scores:
        for job, tokens in zip(jobs, scored, strict=True):
            assert_matches(model, job.prompt_ids, tokens[1:], 1, 2)


def test_the_scorer_shares_the_weights(model: GenerationModel) -> None:
    pairs = zip(model.scorer.parameters(), model.model.parameters(), strict=True)
    assert all(mine.data_ptr() == theirs.data_ptr() for mine, theirs in pairs)
    assert model.scorer is not model.model


def test_scoring_passes_keep_the_logits_within_budget() -> None:
    # 1 GiB of float32 logits over a 2**20 vocabulary: 256 padded tokens a pass.
    assert scoring_passes([100, 100, 50, 300, 10], 1 << 20) == [[0, 1], [2], [3], [4]]
    assert scoring_passes([5, 7, 3], 320) == [[0, 1, 2]]
