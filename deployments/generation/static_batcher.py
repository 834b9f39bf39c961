"""Static batching for the generation replica (`generation_batching: static`): requests share one
`generate` per batch.

Requests queue in arrival order. When the model is free, the next batch takes every request
waiting, up to `max_batch_size`; an idle model first waits up to `batch_wait_timeout_s` from the
oldest arrival for the batch to fill. Requests that arrive while a batch runs therefore all join
the next one. (Serve's `@serve.batch` forms a batch whenever its wait ends, busy model or not:
behind it, 8 closed-loop clients on a tiny GPT-2 ran batches of 1.9 requests on average, one
after another, at an eighth of the in-process rate. Merging its batches behind the busy model
helped less than this queue: Serve runs only a few of its batches at once, so each `generate`
took a few 1-request batches.)

Each decoding step the generate thread hands every row's new text to its caller's stream; a
caller that goes away frees its row at the next step and the rest go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from deployments.batching.gather import GatherQueue, Waiting
from deployments.batching.passes import BatchSettings
from deployments.contract import GenerationChunk, GenerationOutcome, GenerationRequest
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from deployments.replica.observation import BatchObserver

_BATCH_ENDED = object()


@dataclass
class _Row:
    """A request in the queue or the running batch, and what its stream still has to read."""

    job: GenerationJob
    arrived_at: float = field(default_factory=time.monotonic)
    # Chunks in step order, then _BATCH_ENDED, or the exception that failed the batch.
    chunks: asyncio.Queue[GenerationChunk | BaseException | object] = field(
        default_factory=asyncio.Queue
    )


class StaticBatcher:
    """`stream(job)` yields the job's chunks from the batch it joined."""

    def __init__(
        self,
        model: GenerationModel,
        pool: Executor,
        observer: BatchObserver,
        on_finish: Callable[[GenerationOutcome], None],
        warm_up: GenerationJob,
        settings: BatchSettings,
    ) -> None:
        self._model = model
        self._pool = pool
        self._observer = observer
        self._on_finish = on_finish
        self._settings = settings
        self._batch_ids = itertools.count()
        # The answer futures only mark callers that left before their batch (cancelled).
        self._waiting: GatherQueue[_Row, None] = GatherQueue()
        self._arrived = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        model.run_batch([warm_up], emit=lambda _: None)

    def prepare(self, request: GenerationRequest) -> GenerationJob:
        return self._model.prepare(request)

    def apply(self, settings: BatchSettings) -> None:
        self._settings = settings

    async def stream(
        self, job: GenerationJob, every_step: bool = True
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The job's chunks, one per decoding step that produced text (`every_step` is the
        batchers' common interface: one `generate` per batch decodes every step either way)."""
        row = _Row(job)
        queued = self._waiting.put([row])
        self._arrived.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        try:
            while (item := await row.chunks.get()) is not _BATCH_ENDED:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, GenerationChunk)
                yield item
                if item.finish_reason is not None:
                    return
            raise RuntimeError(f"generation of {job.request_id} ended without a finish")
        finally:
            queued.cancel()  # its batch, if not started yet, skips it
            job.cancel()  # no-op once finished; otherwise frees the row at the next step

    def check_health(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"mode": "static"}

    async def _drain(self) -> None:
        while self._waiting:
            await self._fill()
            group = self._waiting.take(self._settings.max_batch_size)
            if group:
                await self._generate(group)

    async def _fill(self) -> None:
        """Wait, up to `batch_wait_timeout_s` after the oldest arrival, for a full batch."""
        loop = asyncio.get_running_loop()
        while self._waiting.items < self._settings.max_batch_size:
            oldest = self._waiting.oldest_since()
            if oldest is None:
                return
            left = oldest + self._settings.batch_wait_timeout_s - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    async def _generate(self, group: Sequence[Waiting[_Row, None]]) -> None:
        rows = [caller.items[0] for caller in group]
        batch_id = next(self._batch_ids)
        loop = asyncio.get_running_loop()
        started_at = time.monotonic()

        def deliver(chunks: list[GenerationChunk | None]) -> None:
            for row, chunk in zip(rows, chunks, strict=True):
                if chunk is not None:
                    row.chunks.put_nowait(chunk)

        def emit(chunks: list[GenerationChunk | None]) -> None:
            loop.call_soon_threadsafe(deliver, chunks)

        def record(row: RowProgress) -> None:
            self._on_finish(row.outcome(batch_id))

        def run() -> None:
            self._model.run_batch([row.job for row in rows], emit, on_finish=record)

        ended: BaseException | object = _BATCH_ENDED
        try:
            # Every `emit` is scheduled on the loop before this await returns: chunks first.
            await loop.run_in_executor(self._pool, run)
        except Exception as exc:  # noqa: BLE001 - every row of the batch gets the error
            ended = exc
        for row in rows:
            row.chunks.put_nowait(ended)
        self._observer.observe([row.arrived_at for row in rows], started_at, time.monotonic())
