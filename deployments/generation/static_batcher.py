"""Static batching for the generation replica (`generation_batching: static`): requests share one
`generate` per `@serve.batch` batch.

Each decoding step the generate thread hands the event loop one chunk slot per request; the batch
generator yields them, and Serve routes each slot to its caller's stream. A request that arrives
while a batch runs waits for the batch's longest row; a caller that goes away frees its row at
the next step and the rest go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

from ray import serve

from deployments.batching.passes import BatchSettings
from deployments.contract import GenerationChunk, GenerationOutcome, GenerationRequest
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from deployments.replica.observation import BatchObserver

BatchSlot = GenerationChunk | None | type[StopIteration]


class StaticBatcher:
    """`stream(job)` yields the job's chunks from the batch it joined."""

    def __init__(
        self,
        model: GenerationModel,
        pool: Executor,
        observer: BatchObserver,
        on_finish: Callable[[GenerationOutcome], None],
        warm_up: GenerationJob,
    ) -> None:
        self._model = model
        self._pool = pool
        self._observer = observer
        self._on_finish = on_finish
        self._batch_ids = itertools.count()
        model.run_batch([warm_up], emit=lambda _: None)

    def prepare(self, request: GenerationRequest) -> GenerationJob:
        return self._model.prepare(request)

    def apply(self, settings: BatchSettings) -> None:
        settings.apply_to(self._batched)

    async def stream(
        self, job: GenerationJob, every_step: bool = True
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The job's chunks, one per decoding step that produced text (`every_step` is the
        batchers' common interface: one `generate` per batch decodes every step either way)."""
        try:
            # Read on past the finish: Serve ends this caller's stream right after it (see
            # `_generate_batch`), and a stream left unread there leaves Serve a future whose
            # StopAsyncIteration nobody retrieves (asyncio logs each one).
            async for chunk in self._batched(job):
                if chunk is not None:
                    yield chunk
        finally:
            job.cancel()  # no-op once finished; otherwise frees the row at the next step

    def check_health(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"mode": "static"}

    @property
    def _batched(self) -> Any:
        """`_generate_batch` as Serve wraps it: one job in, that job's slots out."""
        return self._generate_batch  # type: ignore[misc]

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
            self._on_finish(row.outcome(batch_id))

        def run() -> None:
            try:
                self._model.run_batch(jobs, emit, on_finish=record)
            finally:
                loop.call_soon_threadsafe(steps.put_nowait, None)

        done = loop.run_in_executor(self._pool, run)
        ended = [False] * len(jobs)
        while (chunks := await steps.get()) is not None:
            slots: list[BatchSlot] = []
            finished: list[int] = []
            for index, chunk in enumerate(chunks):
                slots.append(StopIteration if ended[index] else chunk)
                if not ended[index] and chunk is not None and chunk.finish_reason is not None:
                    ended[index] = True
                    finished.append(index)
            yield slots
            if finished:  # end those callers' streams now, not a decoding step later
                yield [StopIteration if index in finished else None for index in range(len(jobs))]
        await done  # re-raises a failed generate, which Serve hands to every caller
        # Queue wait is not tracked per job here: latency is the batch's generation time.
        self._observer.observe([started_at] * len(jobs), started_at, time.monotonic())
