"""Static batching without Ray: the tiny GPT-2 through `StaticBatcher`. Rows of a batch that end
at different steps each get their own text, requests that arrive while a batch runs share the
next one, a caller gone before its batch starts is never generated, and a failed `generate`
reaches every caller of its batch."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from deployments.batching.passes import BatchSettings
from deployments.contract import GenerationChunk, GenerationOutcome, GenerationRequest
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob
from deployments.generation.static_batcher import StaticBatcher
from deployments.replica.observation import BatchObserver
from tests.support.fixtures_generation import GREEDY, PROMPTS, direct_greedy, model, text
from tests.support.fixtures_models import tiny_models

__all__ = ["model", "tiny_models"]

_numbers = itertools.count()


def request(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(
        f"{prompt}-{next(_numbers)}", prompt=prompt, max_tokens=max_tokens, sampling=GREEDY
    )


class Batches:
    """A batcher on its own thread, and what it reported: finished rows and asyncio errors."""

    def __init__(self, model: GenerationModel, settings: BatchSettings) -> None:
        self.outcomes: list[GenerationOutcome] = []
        self.reported: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=1)
        warm_up = model.prepare(request("warm-up", 2))
        self.batcher = StaticBatcher(
            model, self.pool, BatchObserver("test-static"), self.outcomes.append, warm_up, settings
        )

    async def read(self, prompt: str, max_tokens: int) -> list[GenerationChunk]:
        job = self.batcher.prepare(request(prompt, max_tokens))
        return [chunk async for chunk in self.batcher.stream(job)]

    async def running(self, prompt: str, max_tokens: int) -> asyncio.Task[list[GenerationChunk]]:
        """A request whose batch is running: its first chunk is out."""
        stream = self.batcher.stream(self.batcher.prepare(request(prompt, max_tokens)))
        first = await anext(stream)

        async def rest() -> list[GenerationChunk]:
            return [first, *[chunk async for chunk in stream]]

        return asyncio.create_task(rest())

    def batch_of(self, prompt: str) -> int | None:
        [batch_id] = [o.batch_id for o in self.outcomes if o.request_id.startswith(f"{prompt}-")]
        return batch_id


@asynccontextmanager
async def batches(
    model: GenerationModel, max_batch_size: int, wait_s: float
) -> AsyncIterator[Batches]:
    started = Batches(
        model, BatchSettings(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
    )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: started.reported.append(context["message"]))
    try:
        yield started
    finally:
        started.pool.shutdown()


def run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


def test_rows_that_end_at_different_steps_each_get_their_own_text(model: GenerationModel) -> None:
    budgets = [2, 9, 20]

    async def together() -> tuple[list[list[GenerationChunk]], Batches]:
        # The idle model waits long enough for all three to arrive: one batch.
        async with batches(model, max_batch_size=3, wait_s=1.0) as started:
            answers = await asyncio.gather(
                *(started.read(p, n) for p, n in zip(PROMPTS, budgets, strict=True))
            )
            return list(answers), started

    answers, started = run(together)
    for got, prompt, budget in zip(answers, PROMPTS, budgets, strict=True):
        assert text(got) == direct_greedy(model, prompt, budget)[0]
        assert [chunk.finish_reason for chunk in got[:-1]] == [None] * (len(got) - 1)
        assert got[-1].finish_reason == "length"
        assert got[-1].completion_tokens == budget
    assert {started.batch_of(prompt) for prompt in PROMPTS} == {0}
    assert started.reported == []


def test_requests_that_arrive_while_a_batch_runs_share_the_next_one(
    model: GenerationModel,
) -> None:
    async def behind_a_long_batch() -> tuple[list[list[GenerationChunk]], Batches]:
        # No wait: the first request starts alone at once, and the others queue behind it.
        async with batches(model, max_batch_size=8, wait_s=0.0) as started:
            first = await started.running("long", 60)
            later = [asyncio.create_task(started.read(p, 5)) for p in PROMPTS]
            answers = await asyncio.gather(first, *later)
            return list(answers), started

    answers, started = run(behind_a_long_batch)
    assert started.batch_of("long") == 0
    assert {started.batch_of(prompt) for prompt in PROMPTS} == {1}
    for got, prompt in zip(answers[1:], PROMPTS, strict=True):
        assert text(got) == direct_greedy(model, prompt, 5)[0]


def test_a_caller_gone_before_its_batch_starts_is_not_generated(model: GenerationModel) -> None:
    async def leave_while_queued() -> Batches:
        async with batches(model, max_batch_size=8, wait_s=0.0) as started:
            first = await started.running("long", 60)
            gone = asyncio.create_task(started.read("gone", 5))
            stays = asyncio.create_task(started.read("stays", 5))
            await asyncio.sleep(0.001)  # both queued behind the running batch
            gone.cancel()
            await asyncio.gather(first, stays)
            return started

    started = run(leave_while_queued)
    assert [o.request_id.split("-")[0] for o in started.outcomes] == ["long", "stays"]


class FailingModel:
    """The tiny model's `prepare`, and a `run_batch` that fails after the warm-up."""

    def __init__(self, model: GenerationModel) -> None:
        self._model = model
        self.prepare = model.prepare
        self.warmed_up = False

    def run_batch(self, jobs: Sequence[GenerationJob], emit: Any, on_finish: Any = None) -> Any:
        if not self.warmed_up:
            self.warmed_up = True
            return self._model.run_batch(jobs, emit, on_finish)
        raise RuntimeError("out of memory")


def test_a_failed_generate_reaches_every_caller_of_its_batch(model: GenerationModel) -> None:
    async def failing() -> list[BaseException | list[GenerationChunk]]:
        async with batches(model, max_batch_size=8, wait_s=0.5) as started:
            started.batcher = StaticBatcher(
                FailingModel(model),  # type: ignore[arg-type]
                started.pool,
                BatchObserver("test-static"),
                started.outcomes.append,
                model.prepare(request("warm-up", 2)),
                BatchSettings(max_batch_size=2, batch_wait_timeout_s=0.5),
            )
            return list(
                await asyncio.gather(
                    *(started.read(p, 5) for p in PROMPTS[:2]), return_exceptions=True
                )
            )

    results = run(failing)
    assert [str(result) for result in results] == ["out of memory"] * 2
