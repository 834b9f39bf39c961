"""`stream_interval`: chunks regrouped by completion tokens, text and order kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from deployments.contract import GenerationChunk, TokenLogprob
from deployments.generation.chunk_grouping import grouped_by_tokens


def one_token_chunks(tokens: int, index: int = 0) -> list[GenerationChunk]:
    """A choice's stream as a decoding loop makes it: one token per chunk, the last finished."""
    return [
        GenerationChunk(
            text=f"t{count} ",
            prompt_tokens=5,
            completion_tokens=count,
            finish_reason="length" if count == tokens else None,
            index=index,
            logprobs=(TokenLogprob(f"t{count} ", -0.5, ()),),
        )
        for count in range(1, tokens + 1)
    ]


async def source(chunks: Sequence[GenerationChunk]) -> AsyncGenerator[GenerationChunk, None]:
    for chunk in chunks:
        yield chunk


def regrouped(chunks: Sequence[GenerationChunk], interval: int) -> list[GenerationChunk]:
    async def collect() -> list[GenerationChunk]:
        return [chunk async for chunk in grouped_by_tokens(source(chunks), interval)]

    return asyncio.run(collect())


def test_the_first_chunk_goes_at_once_then_one_per_interval_and_the_last_at_once() -> None:
    made = one_token_chunks(10)
    out = regrouped(made, 4)
    assert [chunk.completion_tokens for chunk in out] == [1, 5, 9, 10]
    assert "".join(chunk.text for chunk in out) == "".join(chunk.text for chunk in made)
    assert [token for chunk in out for token in chunk.logprobs] == [
        token for chunk in made for token in chunk.logprobs
    ]
    assert [chunk.finish_reason for chunk in out] == [None, None, None, "length"]


def test_interleaved_choices_are_grouped_each_on_its_own_count() -> None:
    first, second = one_token_chunks(6, index=0), one_token_chunks(3, index=1)
    interleaved = [first[0], second[0], first[1], second[1], second[2], *first[2:]]
    out = regrouped(interleaved, 3)
    by_choice = {
        index: [(c.completion_tokens, c.finish_reason) for c in out if c.index == index]
        for index in (0, 1)
    }
    assert by_choice == {0: [(1, None), (4, None), (6, "length")], 1: [(1, None), (3, "length")]}


def test_an_echoed_prompt_does_not_hold_back_the_first_token() -> None:
    echo = GenerationChunk("the prompt", prompt_tokens=5, completion_tokens=0)
    out = regrouped([echo, *one_token_chunks(6)], 4)
    assert [chunk.completion_tokens for chunk in out] == [0, 1, 5, 6]
    assert out[0].text == "the prompt"


def test_tokens_held_when_a_source_ends_without_a_finish_are_still_handed_over() -> None:
    cut = one_token_chunks(10)[:6]
    out = regrouped(cut, 4)
    assert [chunk.completion_tokens for chunk in out] == [1, 5, 6]
    assert "".join(chunk.text for chunk in out) == "".join(chunk.text for chunk in cut)


def test_closing_the_grouped_stream_closes_its_source() -> None:
    closed: list[bool] = []

    async def endless() -> AsyncGenerator[GenerationChunk, None]:
        try:
            count = 0
            while True:
                count += 1
                yield GenerationChunk("t", 1, count)
        finally:
            closed.append(True)

    async def read_two_then_close() -> None:
        grouped = grouped_by_tokens(endless(), 4)
        assert (await anext(grouped)).completion_tokens == 1
        assert (await anext(grouped)).completion_tokens == 5
        await grouped.aclose()

    asyncio.run(read_two_then_close())
    assert closed == [True]
