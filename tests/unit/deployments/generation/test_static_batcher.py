"""Static batching without Ray: the tiny GPT-2 through `StaticBatcher`, whose `@serve.batch`
runs in plain asyncio. Rows of a batch that end at different steps each get their text, and
Serve's per-caller futures are all read: none is left for asyncio to report as an exception
"never retrieved" (in a replica that was one log record per request)."""

from __future__ import annotations

import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from ray import serve

from deployments.batching.passes import BatchSettings
from deployments.contract import GenerationChunk, GenerationOutcome, GenerationRequest
from deployments.generation.model import GenerationModel
from deployments.generation.static_batcher import StaticBatcher
from deployments.replica.observation import BatchObserver
from tests.support.fixtures_generation import GREEDY, PROMPTS, direct_greedy, model
from tests.support.fixtures_models import tiny_models

__all__ = ["model", "tiny_models"]


def request(prompt: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(prompt, prompt=prompt, max_tokens=max_tokens, sampling=GREEDY)


@pytest.fixture
def outside_a_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `@serve.batch` reads from the replica it runs in: its deployment's config."""
    config = SimpleNamespace(max_ongoing_requests=64)
    monkeypatch.setattr(
        serve, "get_replica_context", lambda: SimpleNamespace(_deployment_config=config)
    )


@pytest.mark.usefixtures("outside_a_replica")
def test_rows_that_end_at_different_steps_leave_no_unread_futures(model: GenerationModel) -> None:
    budgets = [2, 9, 20]
    outcomes: list[GenerationOutcome] = []
    reported: list[str] = []

    async def two_batches() -> tuple[list[list[GenerationChunk]], list[str]]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
        answers: list[list[GenerationChunk]] = []
        with ThreadPoolExecutor(max_workers=1) as pool:
            warm_up = model.prepare(request("warm-up", 2))
            batcher = StaticBatcher(
                model, pool, BatchObserver("test-static"), outcomes.append, warm_up
            )
            # One batch for each three: it waits long enough for the last of them to arrive.
            batcher.apply(BatchSettings(max_batch_size=3, batch_wait_timeout_s=1.0))

            async def read(prompt: str, budget: int) -> list[GenerationChunk]:
                job = batcher.prepare(request(prompt, budget))
                return [chunk async for chunk in batcher.stream(job)]

            # Serve lets go of a batch's futures when the next batch runs.
            for _ in range(2):
                batch = zip(PROMPTS, budgets, strict=True)
                answers.extend(await asyncio.gather(*(read(p, n) for p, n in batch)))
        gc.collect()  # asyncio reports an unread exception when its future is collected
        await asyncio.sleep(0)
        # Read before `asyncio.run` cancels Serve's batch-queue task, which it then reports.
        return answers, list(reported)

    answers, unread = asyncio.run(two_batches())
    for got, prompt, budget in zip(answers, PROMPTS * 2, budgets * 2, strict=True):
        assert "".join(chunk.text for chunk in got) == direct_greedy(model, prompt, budget)[0]
        assert [chunk.finish_reason for chunk in got[:-1]] == [None] * (len(got) - 1)
        assert got[-1].finish_reason == "length"
        assert got[-1].completion_tokens == budget
    assert [outcome.batch_id for outcome in outcomes].count(0) == 3  # the first three shared one
    assert [outcome.batch_id for outcome in outcomes].count(1) == 3
    assert unread == []
