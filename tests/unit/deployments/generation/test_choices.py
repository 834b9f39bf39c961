"""A request's n choices: derived seeds, one job per row, streams merged and closed together,
and the echoed prompt first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from deployments.contract import GenerationChunk, SamplingParams, TokenLogprob
from deployments.generation.choices import (
    MAX_SEED,
    Echo,
    choice_jobs,
    choice_seed,
    choice_stream,
    choices_stream,
    merged,
)
from deployments.generation.progress import GenerationJob


def a_job(max_tokens: int = 3, seed: int | None = 5) -> GenerationJob:
    return GenerationJob(
        "r", [1, 2, 3], max_tokens, SamplingParams(1.0, 0.9, seed), ("x",), logprobs=2
    )


def test_choice_zero_keeps_the_seed_and_the_rest_get_distinct_repeatable_ones() -> None:
    seeds = [choice_seed(5, i) for i in range(16)]
    assert seeds[0] == 5
    assert len(set(seeds)) == 16
    assert seeds == [choice_seed(5, i) for i in range(16)]
    assert all(seed is not None and 0 <= seed <= MAX_SEED for seed in seeds)
    assert choice_seed(None, 3) is None


def test_choice_jobs_share_the_prompt_and_nothing_that_one_row_changes() -> None:
    job = a_job()
    assert choice_jobs(job, 1) == [job]
    jobs = choice_jobs(job, 3)
    assert [j.index for j in jobs] == [0, 1, 2]
    assert [j.sampling.seed for j in jobs] == [choice_seed(5, i) for i in range(3)]
    assert all(j.prompt_ids == job.prompt_ids and j.logprobs == 2 for j in jobs)
    jobs[1].cancel()
    assert [j.cancelled.is_set() for j in jobs] == [False, True, False]


class Rows:
    """Fake per-choice streams that record when they are closed."""

    def __init__(self, fail_index: int | None = None) -> None:
        self.closed: list[int] = []
        self.fail_index = fail_index

    async def stream(self, job: GenerationJob) -> AsyncGenerator[GenerationChunk, None]:
        try:
            for step in range(job.max_tokens):
                await asyncio.sleep(0.001 * (job.index + 1))
                if job.index == self.fail_index and step == 1:
                    raise RuntimeError("row failed")
                reason = "length" if step == job.max_tokens - 1 else None
                yield GenerationChunk(f"{job.index}", 3, step + 1, reason, job.index)  # type: ignore[arg-type]
        finally:
            self.closed.append(job.index)


def test_merged_choices_all_arrive_tagged_with_their_index() -> None:
    rows = Rows()

    async def run() -> list[GenerationChunk]:
        stream = choices_stream(choice_jobs(a_job(), 3), None, rows.stream)
        return [chunk async for chunk in stream]

    got = asyncio.run(run())
    for index in range(3):
        mine = [chunk for chunk in got if chunk.index == index]
        assert "".join(chunk.text for chunk in mine) == str(index) * 3
        assert mine[-1].finish_reason == "length"
    assert sorted(rows.closed) == [0, 1, 2]


def test_closing_the_merge_closes_every_choice() -> None:
    rows = Rows()

    async def run() -> None:
        stream = merged([rows.stream(job) for job in choice_jobs(a_job(50), 3)])
        await anext(stream)
        await stream.aclose()

    asyncio.run(run())
    assert sorted(rows.closed) == [0, 1, 2]


def test_a_failing_choice_fails_the_request_and_closes_the_others() -> None:
    rows = Rows(fail_index=1)

    async def run() -> None:
        async for _ in merged([rows.stream(job) for job in choice_jobs(a_job(50), 3)]):
            pass

    with pytest.raises(RuntimeError, match="row failed"):
        asyncio.run(run())
    assert sorted(rows.closed) == [0, 1, 2]


def test_echo_comes_first_and_max_tokens_zero_is_the_prompt_alone() -> None:
    prompt_logprobs = (TokenLogprob("a", None), TokenLogprob("b", -1.5, (("b", -1.5),)))
    echo = Echo("ab", prompt_logprobs)
    rows = Rows()

    async def run(job: GenerationJob) -> list[GenerationChunk]:
        return [chunk async for chunk in choice_stream(job, echo, rows.stream(job))]

    alone = GenerationChunk.joined(asyncio.run(run(a_job(max_tokens=0))))
    assert (alone.text, alone.finish_reason, alone.completion_tokens) == ("ab", "length", 0)
    assert alone.logprobs == prompt_logprobs
    assert rows.closed == []  # nothing was generated
    first, *rest = asyncio.run(run(a_job(max_tokens=2)))
    assert (first.text, first.logprobs, first.completion_tokens) == ("ab", prompt_logprobs, 0)
    assert GenerationChunk.joined(rest).text == "00"
