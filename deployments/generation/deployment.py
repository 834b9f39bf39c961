"""The generation deployment: one replica holds one causal LM and serves streamed and whole
completions through one of two batchers (`generation_batching`), side by side in this folder:

- continuous (default, continuous_batcher.py): requests join and leave one running batch between
  decoding steps;
- static (static_batcher.py): requests share one `generate` per batch; the requests that arrive
  while one runs all join the next.

Either way a caller that goes away (client disconnect) frees its row at the next step and the
rest go on. torch and transformers load in `__init__`, inside the replica: the ingress binds this
class without importing them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from ray import serve

from autoscaling.replica_stats import Timed
from deployments.batching.passes import BatchSettings
from deployments.contract import (
    GenerationChunk,
    GenerationOutcome,
    GenerationRequest,
    GenerationResult,
)
from deployments.generation.choices import Echo, choice_jobs, choices_stream
from deployments.generation.chunk_grouping import grouped_by_tokens
from deployments.loading.source import ModelSource
from deployments.replica.base import ModelReplica

if TYPE_CHECKING:
    from deployments.generation.continuous_batcher import ContinuousBatcher
    from deployments.generation.model import GenerationModel
    from deployments.generation.progress import GenerationJob
    from deployments.generation.static_batcher import StaticBatcher

# Generation batches are long-lived: waiting a little longer to fill one pays off.
GENERATION_BATCHING: dict[str, Any] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}

_OUTCOMES_KEPT = 1024


# Unlike the other tasks' replicas, torch's threads here keep OpenMP's default of spinning while
# they wait (no OMP_WAIT_POLICY=PASSIVE): one decoding step is hundreds of small operations from
# one loop thread, and passive threads sleep and wake between them. Measured on a 6-layer GPT-2
# through the service on 2 cores, two paired runs: passive answered 13-19% fewer requests at 8
# and 32 clients, with a quarter of the machine idle.
@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,
    health_check_period_s=10,
)
class GenerationDeployment(ModelReplica):
    task = "generation"
    _model: GenerationModel

    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        from deployments.generation.continuous_batcher import ContinuousBatcher
        from deployments.generation.model import load
        from deployments.generation.static_batcher import StaticBatcher

        checked = load(source, max_input_tokens)
        settings = BatchSettings.model_validate(GENERATION_BATCHING)
        self._model = checked.model
        self._stream_interval = source.stream_interval
        self._init_replica(model_name, checked.agreement, settings)
        self._outcomes: deque[GenerationOutcome] = deque(maxlen=_OUTCOMES_KEPT)
        self._scoring = self._merged_forward(self._model.score_prompts)
        # Warm up before Serve reports the replica healthy: the first pass is the slow one.
        warm_up = self._model.prepare(GenerationRequest("warm-up", max_tokens=2, prompt="warm-up"))
        self._batcher: ContinuousBatcher | StaticBatcher
        if source.generation_batching == "continuous":
            self._batcher = ContinuousBatcher.start(
                self._model,
                settings.max_batch_size,
                source.kv_cache_tokens,
                self._observer,
                lambda row: self._outcomes.append(row.outcome(None)),  # deque.append: thread-safe
                warm_up,
            )
        else:
            self._batcher = StaticBatcher(
                self._model,
                self._forward_pool,
                self._observer,
                self._outcomes.append,
                warm_up,
                settings,
            )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = BatchSettings.model_validate({**GENERATION_BATCHING, **user_config})
        self._batcher.apply(self._settings)

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown; the loop's thread would otherwise keep the
        # replica's process alive until Ray kills it.
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            batcher.stop()

    def check_health(self) -> None:
        self._batcher.check_health()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The request's chunks as they are generated, grouped by `stream_interval` tokens; call
        with `handle.options(stream=True)`."""
        chunks = self._chunks(request, every_step=True)
        if self._stream_interval > 1:
            chunks = grouped_by_tokens(chunks, self._stream_interval)
        async with aclosing(chunks) as grouped:
            async for chunk in grouped:
                yield chunk

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        """The whole answer in one reply, one result per choice in index order: no stream,
        inside the replica or across the handle."""
        chunks: list[list[GenerationChunk]] = [[] for _ in range(request.n)]
        async with aclosing(self._chunks(request, every_step=False)) as stream:
            async for chunk in stream:
                chunks[chunk.index].append(chunk)
        results: list[GenerationResult] = []
        for index, parts in enumerate(chunks):
            whole = GenerationChunk.joined(parts) if parts else None
            if whole is None or whole.finish_reason is None:
                raise RuntimeError(f"generation of {request.request_id} ended without a finish")
            results.append(
                GenerationResult(
                    text=whole.text,
                    prompt_tokens=whole.prompt_tokens,
                    completion_tokens=whole.completion_tokens,
                    finish_reason=whole.finish_reason,
                    index=index,
                    logprobs=whole.logprobs,
                )
            )
        return results

    def _chunks(
        self, request: GenerationRequest, every_step: bool
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The chunks of every choice of `request`: for one choice without echo, the batcher's
        own chunk generator. Callers close it with `aclosing`, so a caller that goes away frees
        its rows now, not whenever the garbage collector finalizes the generator."""
        job = self._batcher.prepare(request)
        jobs = choice_jobs(job, request.n)

        def generate(row: GenerationJob) -> AsyncGenerator[GenerationChunk, None]:
            return self._batcher.stream(row, every_step)

        if not request.echo:
            return choices_stream(jobs, None, generate)
        return self._echoed(request, job, jobs, generate)

    async def _echoed(
        self,
        request: GenerationRequest,
        job: GenerationJob,
        jobs: list[GenerationJob],
        generate: Callable[[GenerationJob], AsyncGenerator[GenerationChunk, None]],
    ) -> AsyncGenerator[GenerationChunk, None]:
        echo = await self._echo(request, job)
        async with aclosing(choices_stream(jobs, echo, generate)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _echo(self, request: GenerationRequest, job: GenerationJob) -> Echo:
        text = self._model.prompt_text(request, job.prompt_ids)
        if job.logprobs is None:
            return Echo(text)
        # Prompts that wait together are scored in one forward, on the forward thread.
        [logprobs] = await self._scoring.submit(
            [Timed(job, time.monotonic())], self._settings.max_batch_size
        )
        return Echo(text, logprobs)

    def _batching_card(self) -> dict[str, object]:
        return (
            self._settings.model_dump()
            | self._batcher.describe()
            | {"stream_interval": self._stream_interval}
        )

    def outcome(self, request_id: str) -> GenerationOutcome | None:
        """How a recent request ended on this replica (None if unknown or still running)."""
        for outcome in reversed(self._outcomes):
            if outcome.request_id == request_id:
                return outcome
        return None
