"""Continuous batching without Ray: the tiny GPT-2 through `ContinuousBatcher`, checked
against the static path (`GenerationModel.run_batch`) and plain `generate`: the same text,
finish reasons and token counts, seeds that repeat, rows freed when a caller leaves.

Every loop gets its own copy of the model: a running loop and anything else on the same model
object disturb each other. `model` is the reference, which no loop touches."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import torch

from deployments.contract import GenerationChunk, GenerationRequest, InputRejected, SamplingParams
from deployments.generation.continuous_batcher import ContinuousBatcher, GenerationLoopDied
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from deployments.loading.source import ModelSource
from deployments.replica.observation import BatchObserver
from tests.support.fixtures_generation import GREEDY, PROMPTS, direct_greedy, model, text
from tests.support.fixtures_models import TinyModels, tiny_models

__all__ = ["model", "tiny_models"]


def own_model(tiny_models: TinyModels) -> GenerationModel:
    return GenerationModel(ModelSource(path=str(tiny_models.gpt2), device="cpu"))


class Engine:
    """An engine with what it reported: finished rows and the batch observer."""

    def __init__(
        self, model: GenerationModel, max_batch_size: int = 16, cache_tokens: int | None = None
    ) -> None:
        self.model = model
        self.finished: list[RowProgress] = []
        self.observer = BatchObserver("test-continuous")
        self.engine = ContinuousBatcher(
            model, max_batch_size, cache_tokens, self.observer, self.finished.append
        )
        self.engine.warm_up([5, 6, 7])


@pytest.fixture(scope="module")
def engine(tiny_models: TinyModels) -> Iterator[Engine]:
    started = Engine(own_model(tiny_models))
    yield started
    started.engine.stop()


def job(
    model: GenerationModel,
    prompt: str,
    max_tokens: int,
    stop: tuple[str, ...] = (),
    sampling: SamplingParams = GREEDY,
) -> GenerationJob:
    return model.prepare(
        GenerationRequest(
            prompt, prompt=prompt, max_tokens=max_tokens, sampling=sampling, stop=stop
        )
    )


async def chunks(engine: ContinuousBatcher, work: GenerationJob) -> list[GenerationChunk]:
    return [chunk async for chunk in engine.stream(work)]


def static(model: GenerationModel, work: GenerationJob) -> list[GenerationChunk]:
    """The same job through the static path, one `generate`."""
    got: list[GenerationChunk] = []
    model.run_batch([work], lambda updates: got.extend(u for u in updates if u is not None))
    return got


def test_concurrent_greedy_requests_equal_plain_generate(
    engine: Engine, model: GenerationModel
) -> None:
    budgets = [12, 5, 30]

    async def all_at_once() -> list[list[GenerationChunk]]:
        works = [job(model, p, n) for p, n in zip(PROMPTS, budgets, strict=True)]
        return list(await asyncio.gather(*(chunks(engine.engine, w) for w in works)))

    for got, prompt, budget in zip(asyncio.run(all_at_once()), PROMPTS, budgets, strict=True):
        assert text(got) == direct_greedy(model, prompt, budget)[0]
        assert got[-1].finish_reason == "length"
        assert got[-1].completion_tokens == budget
        assert got[-1].prompt_tokens == len(model.tokenizer(prompt)["input_ids"])
        assert len(got) > 1 or budget == 1  # streamed token by token, not at the end


def test_stop_sequence_cuts_the_text_like_the_static_path(
    engine: Engine, model: GenerationModel
) -> None:
    full = direct_greedy(model, PROMPTS[0], 20)[0]
    stop = full[6:9]
    expected = static(model, job(model, PROMPTS[0], 20, stop=(stop,)))
    got = asyncio.run(chunks(engine.engine, job(model, PROMPTS[0], 20, stop=(stop,))))
    assert text(got) == text(expected) == full[: full.index(stop)]
    assert (got[-1].finish_reason, got[-1].completion_tokens) == (
        "stop",
        expected[-1].completion_tokens,
    )
    # The row was cancelled in the loop when the stop matched: nothing is left running.
    assert engine.engine.running == 0


def test_whole_answers_equal_streamed_ones_and_stop_sequences_still_end_rows_early(
    engine: Engine, model: GenerationModel
) -> None:
    full = direct_greedy(model, PROMPTS[0], 20)[0]
    stop = full[6:9]

    async def whole(works: list[GenerationJob]) -> list[list[GenerationChunk]]:
        async def one(work: GenerationJob) -> list[GenerationChunk]:
            return [chunk async for chunk in engine.engine.stream(work, every_step=False)]

        return list(await asyncio.gather(*(one(w) for w in works)))

    plain, stopped = asyncio.run(
        whole([job(model, PROMPTS[1], 25), job(model, PROMPTS[0], 20, stop=(stop,))])
    )
    assert len(plain) == 1  # handed over once, at the end
    assert text(plain) == direct_greedy(model, PROMPTS[1], 25)[0]
    assert (plain[-1].finish_reason, plain[-1].completion_tokens) == ("length", 25)
    assert text(stopped) == full[: full.index(stop)]
    assert stopped[-1].finish_reason == "stop"
    assert engine.engine.running == 0


def test_a_reader_that_falls_behind_gets_the_tokens_since_in_one_chunk(
    engine: Engine, model: GenerationModel
) -> None:
    async def read_slowly() -> tuple[GenerationChunk, list[GenerationChunk]]:
        stream = engine.engine.stream(job(model, PROMPTS[0], 30))
        first = await anext(stream)
        # Blocks the event loop on purpose: the generation thread runs ahead meanwhile.
        time.sleep(0.5)  # noqa: ASYNC251
        return first, [chunk async for chunk in stream]

    first, rest = asyncio.run(read_slowly())
    assert first.text + text(rest) == direct_greedy(model, PROMPTS[0], 30)[0]
    assert len(rest) < 5 < 30 - first.completion_tokens  # not one chunk per token
    assert (rest[-1].finish_reason, rest[-1].completion_tokens) == ("length", 30)


def test_seeded_sampling_equals_the_static_path_and_repeats(
    engine: Engine, model: GenerationModel
) -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=42)

    async def sampled_beside_greedy() -> list[list[GenerationChunk]]:
        works = [job(model, PROMPTS[0], 15), job(model, "Hello", 15, sampling=seeded)]
        return list(await asyncio.gather(*(chunks(engine.engine, w) for w in works)))

    greedy_row, sampled = asyncio.run(sampled_beside_greedy())
    alone = asyncio.run(chunks(engine.engine, job(model, "Hello", 15, sampling=seeded)))
    expected = text(static(model, job(model, "Hello", 15, sampling=seeded)))
    assert text(sampled) == text(alone) == expected
    assert text(greedy_row) == direct_greedy(model, PROMPTS[0], 15)[0]
    other = SamplingParams(temperature=1.0, top_p=0.95, seed=43)
    assert text(
        asyncio.run(chunks(engine.engine, job(model, "Hello", 15, sampling=other)))
    ) != text(alone)


def test_a_caller_that_leaves_frees_its_row_and_the_others_go_on(
    engine: Engine, model: GenerationModel
) -> None:
    async def leave_after_three(work: GenerationJob) -> int:
        stream = engine.engine.stream(work)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        return seen

    async def scenario() -> list[GenerationChunk]:
        stayer = asyncio.create_task(chunks(engine.engine, job(model, PROMPTS[1], 300)))
        assert await leave_after_three(job(model, PROMPTS[0], 3000)) == 3
        return await stayer

    expected = direct_greedy(model, PROMPTS[1], 300)[0]
    engine.finished.clear()
    stayed = asyncio.run(scenario())
    assert text(stayed) == expected
    outcomes = {row.job.request_id: row for row in engine.finished}
    left = outcomes[PROMPTS[0]]
    assert left.finish_reason == "cancelled"
    assert left.completion_tokens < 3000
    assert outcomes[PROMPTS[1]].finish_reason == "length"
    assert engine.engine.running == 0
    assert engine.engine._manager.output_router.result_handlers == {}  # no handler left behind


def test_each_request_is_observed_with_its_wait_and_batch(
    engine: Engine, model: GenerationModel
) -> None:
    engine.observer.record.clear()

    async def four() -> None:
        await asyncio.gather(*(chunks(engine.engine, job(model, p, 8)) for p in [*PROMPTS, "x"]))

    asyncio.run(four())
    sizes = engine.observer.record.sizes()
    assert len(sizes) == 4  # one observation a request
    assert max(sizes) > 1  # they ran side by side
    assert engine.observer.autoscaling_stats()["sample_count"] >= 4


def test_eos_finishes_with_stop_and_is_not_in_the_text(tiny_models: TinyModels) -> None:
    """Make a token the greedy output reaches late the end-of-sequence token: it stops there."""
    model = own_model(tiny_models)
    ids = model.tokenizer(PROMPTS[0], return_tensors="pt")
    with torch.inference_mode():
        out = model.model.generate(**ids, max_new_tokens=20, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    first_new = next(k for k in range(2, len(new)) if new[k] not in new[:k])
    model.eos_ids = frozenset({new[first_new]})
    started = Engine(model)
    try:
        got = asyncio.run(chunks(started.engine, job(model, PROMPTS[0], 20)))
    finally:
        started.engine.stop()
    assert got[-1].finish_reason == "stop"
    assert got[-1].completion_tokens == first_new + 1
    assert text(got) == model.tokenizer.decode(new[:first_new])


def test_a_stopped_loop_fails_requests_instead_of_hanging(
    model: GenerationModel, tiny_models: TinyModels
) -> None:
    started = Engine(own_model(tiny_models), max_batch_size=2)
    started.engine.stop()
    with pytest.raises(GenerationLoopDied):
        started.engine.check_health()

    async def one() -> list[GenerationChunk]:
        return await asyncio.wait_for(chunks(started.engine, job(model, "Hello", 5)), 10)

    with pytest.raises(GenerationLoopDied):
        asyncio.run(one())
    assert started.engine.running == 0


def test_requests_that_overfill_the_cache_take_turns_with_unchanged_text(
    model: GenerationModel, tiny_models: TinyModels
) -> None:
    """8 requests of about 200 tokens over a 512-token cache: the loop sets some aside and
    brings them back; every answer is still plain greedy `generate`'s."""
    prompts = [f"prompt number {i} says hello" for i in range(8)]
    expected = [text(static(model, job(model, p, 200))) for p in prompts]
    started = Engine(own_model(tiny_models), cache_tokens=512)
    try:

        async def all_at_once() -> list[list[GenerationChunk]]:
            works = [job(model, p, 200) for p in prompts]
            return list(await asyncio.gather(*(chunks(started.engine, w) for w in works)))

        got = asyncio.run(asyncio.wait_for(all_at_once(), 120))
        started.engine.check_health()
    finally:
        started.engine.stop()
    assert [text(g) for g in got] == expected


def test_a_request_larger_than_the_cache_is_refused_before_it_reaches_the_loop(
    model: GenerationModel, tiny_models: TinyModels
) -> None:
    started = Engine(own_model(tiny_models), cache_tokens=300)
    try:
        cache = started.engine.cache_tokens
        with pytest.raises(InputRejected, match="KV cache holds 300 tokens") as caught:
            model.prepare(GenerationRequest("big", prompt="Hello", max_tokens=300), cache)
        assert caught.value.param == "max_tokens"
        default = model.prepare(
            GenerationRequest(
                "d", prompt="Hello", max_tokens=4000, max_tokens_is_default=True, sampling=GREEDY
            ),
            cache,
        )
        assert len(default.prompt_ids) + default.max_tokens == 300  # shortened to fit
        got = asyncio.run(chunks(started.engine, default))
        assert got[-1].completion_tokens == default.max_tokens
        too_big = GenerationJob("raw", [5, 6], max_tokens=299, sampling=GREEDY, stop=())
        with pytest.raises(ValueError, match="do not fit the 300-token KV cache"):
            asyncio.run(chunks(started.engine, too_big))
        started.engine.check_health()  # the loop never saw it
    finally:
        started.engine.stop()


def test_a_model_the_loop_cannot_run_fails_the_deploy_with_the_fix_named(
    model: GenerationModel, tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch
) -> None:

    def unsupported(self: ContinuousBatcher, prompt_ids: list[int]) -> None:
        raise ValueError("Implementation flex_attention is not supported for continuous batching")

    monkeypatch.setattr(ContinuousBatcher, "warm_up", unsupported)
    stopped: list[ContinuousBatcher] = []
    really_stop = ContinuousBatcher.stop

    def stop(self: ContinuousBatcher) -> None:
        stopped.append(self)
        really_stop(self)

    monkeypatch.setattr(ContinuousBatcher, "stop", stop)
    with pytest.raises(RuntimeError) as caught:
        ContinuousBatcher.start(
            own_model(tiny_models),
            2,
            None,
            BatchObserver("t"),
            lambda row: None,
            job(model, "Hello", 2),
        )
    message = str(caught.value)
    assert "continuous batching cannot run this model (ValueError: Implementation" in message
    assert message.endswith("set generation_batching: static for it")
    assert len(stopped) == 1  # the loop it had started is not left running
    assert not stopped[0]._manager.is_running()


def test_a_replica_stream_closed_early_ends_its_row_at_once(tiny_models: TinyModels) -> None:
    """What Serve does when a client leaves: it closes the replica's stream. The row must be
    cancelled by the time the close returns, not whenever the garbage collector gets to it."""
    from deployments.generation.deployment import GenerationDeployment

    replica_class = cast(Any, GenerationDeployment).func_or_class
    replica = replica_class("tiny", ModelSource(path=str(tiny_models.gpt2), device="cpu"))
    request = GenerationRequest("leaver", prompt=PROMPTS[0], max_tokens=3000, sampling=GREEDY)

    async def three_chunks_then_close() -> None:
        stream = replica.stream(request)
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        outcome = replica.outcome("leaver")  # no await in between: nothing else has run
        assert outcome is not None
        assert outcome.finish_reason == "cancelled"
        assert outcome.completion_tokens < 3000

    try:
        asyncio.run(three_chunks_then_close())
        assert replica.describe()["batching"]["mode"] == "continuous"
    finally:
        replica.__del__()


def test_a_replica_with_a_stream_interval_streams_the_same_text_in_fewer_chunks(
    tiny_models: TinyModels, model: GenerationModel
) -> None:
    from deployments.generation.deployment import GenerationDeployment

    replica_class = cast(Any, GenerationDeployment).func_or_class
    source = ModelSource(path=str(tiny_models.gpt2), device="cpu", stream_interval=4)
    replica = replica_class("tiny", source)
    request = GenerationRequest("grouped", prompt=PROMPTS[0], max_tokens=14, sampling=GREEDY)

    async def whole_stream() -> list[GenerationChunk]:
        return [chunk async for chunk in replica.stream(request)]

    try:
        got = asyncio.run(whole_stream())
        assert replica.describe()["batching"]["stream_interval"] == 4
    finally:
        replica.__del__()
    assert text(got) == direct_greedy(model, PROMPTS[0], 14)[0]
    counts = [chunk.completion_tokens for chunk in got]
    assert counts[-1] == 14
    assert got[-1].finish_reason == "length"
    # The first chunk at once, then at least 4 new tokens per chunk until the last.
    assert all(later - earlier >= 4 for earlier, later in itertools.pairwise(counts[:-1]))
    assert len(got) <= 1 + -(-(14 - counts[0]) // 4)


def test_a_loop_that_dies_mid_request_fails_the_request_instead_of_hanging(
    tiny_models: TinyModels,
) -> None:
    started = Engine(own_model(tiny_models))

    async def die_after_three_chunks() -> None:
        stream = started.engine.stream(job(started.model, PROMPTS[0], 3000))
        for _ in range(3):
            await anext(stream)
        # What a crash leaves: the loop's thread gone, the request's tokens never coming.
        started.engine._manager.stop(block=True, hard_stop=True)
        async with asyncio.timeout(10):
            async for _ in stream:
                pass

    # The loop's own error for the request, or GenerationLoopDied from the liveness check if
    # no output ever comes; a TimeoutError would mean it hung.
    with pytest.raises(RuntimeError, match=r"failed|stopped"):
        asyncio.run(die_after_three_chunks())
    with pytest.raises(GenerationLoopDied):
        started.engine.check_health()
    assert started.engine.running == 0
