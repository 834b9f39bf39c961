"""The generation deployment: one replica holds one causal LM and serves streamed and whole
completions through one of two batchers (`generation_batching`):

- continuous (default, deployments/continuous_generation.py): requests join and leave one
  running batch between decoding steps;
- static: requests share one `generate` per batch through a generator `@serve.batch`. Each
  decoding step the generate thread hands the event loop one chunk slot per request; the batch
  generator yields them, and Serve routes each slot to its caller's stream.

Either way a caller that goes away (client disconnect) frees its row at the next step and the
rest go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from ray import serve

from deployments.agreement_metrics import logits_agreement
from deployments.batch_observer import BatchObserver
from deployments.batch_settings import BatchSettings
from deployments.continuous_generation import ContinuousGeneration
from deployments.generation_model import GenerationModel
from deployments.generation_progress import GenerationJob, RowProgress
from deployments.generation_types import (
    GenerationChunk,
    GenerationOutcome,
    GenerationRequest,
    GenerationResult,
)
from deployments.loading import ModelSource
from deployments.quantization_check import load_checked
from deployments.replica_base import MODEL_RUNTIME_ENV, ModelReplica

# Generation batches are long-lived: waiting a little longer to fill one pays off.
GENERATION_BATCHING: dict[str, Any] = {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}

BatchSlot = GenerationChunk | None | type[StopIteration]
_OUTCOMES_KEPT = 1024


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "runtime_env": MODEL_RUNTIME_ENV},
    max_ongoing_requests=64,
    health_check_period_s=10,
)
class GenerationDeployment(ModelReplica):
    def __init__(
        self, model_name: str, source: ModelSource, max_input_tokens: int | None = None
    ) -> None:
        checked = load_checked(
            source,
            build=lambda s: GenerationModel(s, max_input_tokens),
            probe=lambda model, texts: model.next_token_logits(texts),
            compare=logits_agreement,
        )
        self._model = checked.model
        self._agreement = checked.agreement
        settings = BatchSettings.model_validate(GENERATION_BATCHING)
        self._init_replica(model_name, settings)
        self._batch_ids = itertools.count()
        self._outcomes: deque[GenerationOutcome] = deque(maxlen=_OUTCOMES_KEPT)
        self._continuous: ContinuousGeneration | None = None
        # Warm up before Serve reports the replica healthy: the first pass is the slow one.
        warm_up = self._model.prepare(GenerationRequest("warm-up", max_tokens=2, prompt="warm-up"))
        if source.generation_batching == "continuous":
            self._continuous = start_continuous(
                self._model,
                settings.max_batch_size,
                source.kv_cache_tokens,
                self._observer,
                lambda row: self._outcomes.append(row.outcome(None)),  # deque.append: thread-safe
                warm_up,
            )
        else:
            self._model.run_batch([warm_up], emit=lambda _: None)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = BatchSettings.model_validate({**GENERATION_BATCHING, **user_config})
        self._settings.apply_to(self._batched)
        if self._continuous is not None:
            self._continuous.set_max_batch_size(self._settings.max_batch_size)

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown; the loop's thread would otherwise keep the
        # replica's process alive until Ray kills it.
        continuous = getattr(self, "_continuous", None)
        if continuous is not None:
            continuous.stop()

    def check_health(self) -> None:
        if self._continuous is not None:
            self._continuous.check_health()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The request's chunks as they are generated; call with `handle.options(stream=True)`."""
        if self._continuous is not None:
            job = self._model.prepare(request, self._continuous.cache_tokens)
            # aclosing: when the caller goes away, its row leaves the batch now, not whenever
            # the garbage collector finalizes the inner generator.
            async with aclosing(self._continuous.stream(job)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        job = self._model.prepare(request)
        try:
            async for chunk in self._batched(job):
                if chunk is None:
                    continue
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            job.cancel()  # no-op once finished; otherwise frees the row at the next step

    @property
    def _batched(self) -> Any:
        """`_generate_batch` as Serve wraps it: one job in, that job's slots out."""
        return self._generate_batch  # type: ignore[misc]

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        texts: list[str] = []
        last: GenerationChunk | None = None
        async for chunk in self.stream(request):
            texts.append(chunk.text)
            last = chunk
        if last is None or last.finish_reason is None:
            raise RuntimeError(f"generation of {request.request_id} ended without a finish")
        return GenerationResult(
            text="".join(texts),
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            finish_reason=last.finish_reason,
        )

    # Serve's type hints for @serve.batch know no generator batch functions; Serve itself does.
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)  # type: ignore[arg-type]
    async def _generate_batch(  # type: ignore[misc]
        self, jobs: list[GenerationJob]
    ) -> AsyncIterator[list[BatchSlot]]:
        batch_id = next(self._batch_ids)
        started_at = time.monotonic()
        loop = asyncio.get_running_loop()
        steps: asyncio.Queue[list[GenerationChunk | None] | None] = asyncio.Queue()

        def emit(chunks: list[GenerationChunk | None]) -> None:
            loop.call_soon_threadsafe(steps.put_nowait, chunks)

        def record(row: RowProgress) -> None:
            self._outcomes.append(row.outcome(batch_id))  # deque.append is thread-safe

        def run() -> None:
            try:
                self._model.run_batch(jobs, emit, on_finish=record)
            finally:
                loop.call_soon_threadsafe(steps.put_nowait, None)

        done = loop.run_in_executor(self._forward_pool, run)
        ended = [False] * len(jobs)
        while (chunks := await steps.get()) is not None:
            slots: list[BatchSlot] = []
            for index, chunk in enumerate(chunks):
                slots.append(StopIteration if ended[index] else chunk)
                if chunk is not None and chunk.finish_reason is not None:
                    ended[index] = True
            yield slots
        await done  # re-raises a failed generate, which Serve hands to every caller
        # Queue wait is not tracked per job here: latency is the batch's generation time.
        self._observer.observe([started_at] * len(jobs), started_at, time.monotonic())

    def describe(self) -> dict[str, object]:
        return {
            "task": "generation",
            **self._model.describe(),
            "quantization_agreement": self._agreement.as_dict() if self._agreement else None,
            "batching": self._settings.model_dump()
            | (self._continuous.describe() if self._continuous else {"mode": "static"}),
        }

    def outcome(self, request_id: str) -> GenerationOutcome | None:
        """How a recent request ended on this replica (None if unknown or still running)."""
        for outcome in reversed(self._outcomes):
            if outcome.request_id == request_id:
                return outcome
        return None


def start_continuous(
    model: GenerationModel,
    max_batch_size: int,
    kv_cache_tokens: int | None,
    observer: BatchObserver,
    on_finish: Callable[[RowProgress], None],
    warm_up: GenerationJob,
) -> ContinuousGeneration:
    """Start the continuous batching loop and run one request through it, or fail the deploy
    with a message that says what to change."""
    engine: ContinuousGeneration | None = None
    try:
        engine = ContinuousGeneration(model, max_batch_size, kv_cache_tokens, observer, on_finish)
        engine.warm_up(warm_up.prompt_ids)
        return engine
    except Exception as exc:
        if engine is not None:
            engine.stop()
        raise RuntimeError(
            f"continuous batching cannot run this model ({type(exc).__name__}: {exc}); "
            "set generation_batching: static for it"
        ) from exc
