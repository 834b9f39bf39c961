"""Continuous batching for the generation replica: one running batch that requests join and
leave between decoding steps, on transformers' paged-attention `ContinuousBatchingManager`.

A static batch (`@serve.batch` around one `generate`) makes a request that arrives while a batch
runs wait for its longest row, and every row of a batch pays for the longest prompt's padding.
Here a request starts at the next step and its row is freed the step it ends, so short answers
are not held behind long ones and the model stays as full as the traffic allows.

The manager runs its own thread and hands each request's tokens to the event loop; each request
keeps its own `RowProgress` (detokenizer, stop sequences, max_tokens), so chunks, finish reasons
and cancellation behave as in a static batch.

At most `max_batch_size` requests run at once (AdmissionLimit, first come first served); the
limit can move while requests wait, when `reconfigure` brings a new `user_config`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from transformers import ContinuousBatchingConfig, GenerationConfig

from deployments.batching.passes import BatchSettings
from deployments.contract import GenerationChunk, GenerationRequest
from deployments.generation.model import GenerationModel
from deployments.generation.progress import GenerationJob, RowProgress
from deployments.generation.sampling import SlotSampling, processor_list
from deployments.replica.observation import BatchObserver

# Tokens of KV cache in one page. Smaller than transformers' 256: a CPU replica's cache is small
# and every request holds at least one page.
PAGE_TOKENS = 64
# Tokens one step may process on CPU (prefill is cut into chunks of this). With SDPA attention a
# step's mask is this many rows by the whole cache; transformers' default (8192) makes it 16x
# larger, and 512 tokens already fill a CPU's cores. On a GPU transformers chooses.
STEP_TOKENS_CPU = 512
# By default the cache holds this many tokens (or the context, if shorter) for each of the
# replica's start-up max_batch_size requests; `user_config` may change max_batch_size later, but
# the cache is reserved once.
DEFAULT_TOKENS_PER_REQUEST = 2048
# How long to wait for the next output before checking that the generation thread still runs.
_LIVENESS_CHECK_S = 1.0


class GenerationLoopDied(RuntimeError):
    """The manager's thread is gone: requests fail and the replica reports itself unhealthy."""


def cache_tokens(model: GenerationModel, max_batch_size: int, kv_cache_tokens: int | None) -> int:
    if kv_cache_tokens is not None:
        return kv_cache_tokens
    return max_batch_size * min(model.context_tokens, DEFAULT_TOKENS_PER_REQUEST)


class ContinuousBatcher:
    """`stream(job)` yields the job's chunks; at most `max_batch_size` jobs run at once.

    The loop owns the model object while it runs: a plain `generate` on the same object beside
    a running loop returned other tokens in 10 of 10 tries (on a second copy of the weights, 0
    of 10), so a replica uses one batcher or the other, never both.
    """

    def __init__(
        self,
        model: GenerationModel,
        max_batch_size: int,
        kv_cache_tokens: int | None,
        observer: BatchObserver,
        on_finish: Callable[[RowProgress], None],
    ) -> None:
        self._model = model
        self._observer = observer
        self._on_finish = on_finish
        self._admission = AdmissionLimit(max_batch_size)
        self._ids = itertools.count()
        self._eos = sorted(model.eos_ids) or [-1]
        self.cache_tokens = cache_tokens(model, max_batch_size, kv_cache_tokens)
        config = ContinuousBatchingConfig(
            page_size=PAGE_TOKENS,
            num_blocks=math.ceil(self.cache_tokens / PAGE_TOKENS),
            max_batch_tokens=STEP_TOKENS_CPU if model.device.type == "cpu" else None,
            # Prefix caching (shared pages for a common prompt start) is not measured here yet;
            # off, every request's pages are its own.
            allow_block_sharing=False,
            # Flash attention only from an installed flash-attn package: transformers' other
            # route fetches kernels from the Hub, which a replica must never reach.
            auto_switch_to_flash=importlib.util.find_spec("flash_attn") is not None,
        )
        generation = GenerationConfig(
            do_sample=False,  # sampled rows are pinned by SlotSampling; the loop takes the argmax
            eos_token_id=self._eos,
            pad_token_id=model.pad_id,
            max_new_tokens=1,
        )
        self._sampling = SlotSampling()
        self._manager: Any = model.model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=config
        )
        self._manager.logit_processor = processor_list(self._sampling)
        self._manager.start()

    @classmethod
    def start(
        cls,
        model: GenerationModel,
        max_batch_size: int,
        kv_cache_tokens: int | None,
        observer: BatchObserver,
        on_finish: Callable[[RowProgress], None],
        warm_up: GenerationJob,
    ) -> ContinuousBatcher:
        """Start the loop and run one request through it, or fail the deploy with a message
        that says what to change."""
        batcher: ContinuousBatcher | None = None
        try:
            batcher = cls(model, max_batch_size, kv_cache_tokens, observer, on_finish)
            batcher.warm_up(warm_up.prompt_ids)
            return batcher
        except Exception as exc:
            if batcher is not None:
                batcher.stop()
            raise RuntimeError(
                f"continuous batching cannot run this model ({type(exc).__name__}: {exc}); "
                "set generation_batching: static for it"
            ) from exc

    def prepare(self, request: GenerationRequest) -> GenerationJob:
        """The request tokenised and checked, against the KV cache as well as the context."""
        return self._model.prepare(request, self.cache_tokens)

    def warm_up(self, prompt_ids: list[int]) -> None:
        """Run one short request to the end before any caller's (the first steps are slow)."""
        request_id = self._manager.add_request(
            prompt_ids, request_id="warm-up", max_new_tokens=2, eos_token_id=self._eos
        )
        output = self._manager.get_result(request_id=request_id, timeout=300)
        if output is None or output.error is not None:
            self.check_health()
            error = "no answer" if output is None else output.error
            raise RuntimeError(f"the warm-up request failed: {error}")

    def apply(self, settings: BatchSettings) -> None:
        """A new `max_batch_size` takes effect as running requests finish."""
        self._admission.limit = settings.max_batch_size

    @property
    def running(self) -> int:
        return self._admission.active

    def check_health(self) -> None:
        error = self._manager.background_thread_status.fatal_error
        if error is not None or not self._manager.is_running():
            raise GenerationLoopDied(f"the continuous batching loop stopped: {error!r}")

    def stop(self) -> None:
        if self._manager.is_running():
            self._manager.stop(block=True, timeout=10)

    async def stream(
        self, job: GenerationJob, every_step: bool = True
    ) -> AsyncGenerator[GenerationChunk, None]:
        """The job's text as it is generated: at most one chunk per wake-up of this event loop,
        holding every token the loop produced since the last one. `every_step=False` (a caller
        that only wants the whole answer): without stop sequences to watch, the loop hands over
        the tokens once, at the end, instead of once per decoding step."""
        # One request larger than the whole cache can never be scheduled, and transformers'
        # loop dies of it; `GenerationModel.prepare(request, cache_tokens)` refuses it first.
        needed = len(job.prompt_ids) + job.max_tokens
        if needed > self.cache_tokens:
            raise ValueError(f"{needed} tokens do not fit the {self.cache_tokens}-token KV cache")
        enqueued_at = time.monotonic()
        await self._admission.acquire()
        started_at = time.monotonic()
        try:
            # aclosing: a caller that stops early must end `_run` now (cancelling its row), not
            # whenever the garbage collector finalizes it.
            async with aclosing(self._run(job, every_step or bool(job.stop))) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            running = self._admission.active
            self._admission.release()
            self._observer.observe_request(enqueued_at, started_at, time.monotonic(), running)

    async def _run(
        self, job: GenerationJob, per_step: bool
    ) -> AsyncGenerator[GenerationChunk, None]:
        row = RowProgress(job, self._model.tokenizer, self._model.eos_ids)
        request_id = f"{job.request_id}#{next(self._ids)}"
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        self._manager.register_result_handler(request_id, outputs.put_nowait)
        sampling = self._sampling.register(job.sampling, self._model.device, row.capture)
        loop_done = False
        try:
            self.check_health()
            self._manager.add_request(
                job.prompt_ids,
                request_id=request_id,
                max_new_tokens=job.max_tokens,
                streaming=per_step,
                eos_token_id=self._eos,
                **sampling,
            )
            seen = 0
            while not row.finished:
                output = await self._next_output(outputs)
                # Outputs carry every token so far: when the loop ran ahead, the newest is enough.
                while output.error is None and not outputs.empty():
                    output = outputs.get_nowait()
                if output.error is not None:
                    loop_done = True
                    raise RuntimeError(f"generation of {job.request_id} failed: {output.error}")
                tokens = output.generated_tokens
                chunks: list[GenerationChunk] = []
                for token in tokens[seen:]:
                    if (chunk := row.advance(token)) is not None:
                        chunks.append(chunk)
                    if row.finished:
                        break
                seen = len(tokens)
                loop_done = output.is_finished()
                if loop_done and not row.finished and (chunk := row.end()) is not None:
                    chunks.append(chunk)
                if chunks:
                    yield GenerationChunk.joined(chunks)
        finally:
            if not loop_done:  # a stop sequence, or the caller went away: free the row now
                self._manager.cancel_request(request_id)
            self._forget(request_id)
            self._sampling.release(sampling)
            row.cancel()  # no-op once finished
            self._on_finish(row)

    async def _next_output(self, outputs: asyncio.Queue[Any]) -> Any:
        while True:
            try:
                # asyncio.timeout, not wait_for: no task per token on the event loop.
                async with asyncio.timeout(_LIVENESS_CHECK_S):
                    return await outputs.get()
            except TimeoutError:
                self.check_health()  # a long prefill is fine; a dead thread is not

    def _forget(self, request_id: str) -> None:
        # The manager drops a handler when its request finishes; a cancelled one never does.
        router = self._manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)

    def describe(self) -> dict[str, object]:
        return {
            "mode": "continuous",
            "kv_cache_tokens": self.cache_tokens,
        }


class AdmissionLimit:
    """An asyncio semaphore whose size can move. Use from one event loop; `limit` may be set
    from anywhere (a plain attribute write), and takes effect at the next acquire or release."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._admit()  # the limit may have grown since the last release
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # admitted, then cancelled before it could run: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)
