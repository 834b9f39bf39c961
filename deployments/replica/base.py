"""What every model replica shares: batching knobs from `user_config`, a forward-pass thread,
the batch observer (own record, autoscaling stats, metrics) and the introspection methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ray import serve

if TYPE_CHECKING:
    from deployments.loading.quantization import QuantizationAgreement

from autoscaling.replica_stats import Timed
from deployments.batching.passes import BatchSettings, ForwardMerger
from deployments.replica.observation import BatchObserver

# torch's OpenMP threads spin while they wait; on cores shared with the ingress and Ray that
# spinning steals the CPU the other processes need. Passive waiting keeps the threads useful.
# It must be in the environment before torch loads, hence the replica's runtime_env. (Generation
# replicas go without it: deployments/generation/deployment.py says why.)
MODEL_RUNTIME_ENV = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}

logger = logging.getLogger("ray.serve")

# Forward passes are long and batch-friendly; the event loops that move requests (this replica's,
# the ingress's, the proxy's) are short and on every request's path. On cores shared between
# them, a pass that holds a core makes a waiting request wait too. Forward threads therefore run
# at a lower CPU priority (Linux niceness is per thread, and torch's own threads inherit it).
# Measured in an open loop at 150 req/s on 2 cores: p50 100 -> 75 ms, p99 320 -> 190-260 ms,
# same throughput at 32 clients. Ray starts workers at niceness 15 (`RAY_worker_niceness`), so
# there the passes sit at 19, the cap, still below the event loop.
FORWARD_THREAD_NICENESS = 10

In = TypeVar("In")
Out = TypeVar("Out")


class DescribedModel(Protocol):
    def describe(self) -> dict[str, object]: ...


class ModelReplica:
    """A replica holding one loaded model of the task named by `task` (each task's replica
    narrows `_model` to its own model class)."""

    task: ClassVar[str]
    _model: DescribedModel

    def _init_replica(
        self,
        model_name: str,
        agreement: QuantizationAgreement | None,
        settings: BatchSettings | None = None,
        parallel_passes: int = 1,
    ) -> None:
        self._agreement = agreement
        self._model_name = model_name
        # Forward passes run off the event loop so requests keep queueing while a batch runs.
        self._parallel_passes = parallel_passes
        self._forward_pool = ThreadPoolExecutor(
            max_workers=parallel_passes,
            thread_name_prefix="forward",
            initializer=lower_thread_priority,
            initargs=(FORWARD_THREAD_NICENESS,),
        )
        self._settings = settings or BatchSettings()
        self._observer = BatchObserver(model_name)
        self._calls_inside = 0  # calls now in `_each`
        # Inputs handed to Serve's batch queue and not yet to a pass (ids of their Timed).
        self._in_batch_queue: set[int] = set()

    def _batch_method(self) -> Any:
        """The replica's `@serve.batch` method, whose knobs `reconfigure` sets."""
        raise NotImplementedError

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._settings = BatchSettings.from_user_config(user_config)
        self._settings.apply_to(self._batch_method())

    async def _each(
        self,
        items: Sequence[In],
        submit: Callable[[Timed[In]], Awaitable[Out]],
        merger: ForwardMerger[In, Out],
    ) -> list[Out]:
        """Submit items to the batch queue one per entry, at most `max_batch_size` at a time,
        so one large request takes turns with everyone else instead of holding the model.

        A request that finds a pass slot free, nobody in the batch queue and no more calls
        inside than pass slots skips the queue and its `batch_wait_timeout_s`: it is the next
        pass at once. (Skipping only on an idle replica left calls beside one running pass
        waiting out the timeout while the other slot sat idle: 8 clients answered 7-18% fewer
        requests. With more calls inside than slots the replica is behind, and the queue's wait
        grows passes: skipping there too cost 128 clients about 2.5%.)"""
        step = self._settings.max_batch_size
        self._calls_inside += 1
        try:
            if (
                self._calls_inside <= self._parallel_passes
                and not self._in_batch_queue
                and merger.has_free_slot()
                and len(items) <= step
            ):
                now = time.monotonic()
                return await merger.submit([Timed(item, now) for item in items], step)
            results: list[Out] = []
            for start in range(0, len(items), step):
                now = time.monotonic()
                chunk = [Timed(item, now) for item in items[start : start + step]]
                queued = [id(timed) for timed in chunk]
                self._in_batch_queue.update(queued)
                try:
                    results.extend(await asyncio.gather(*(submit(timed) for timed in chunk)))
                finally:  # Serve drops a cancelled caller's inputs without handing them over
                    self._in_batch_queue.difference_update(queued)
            return results
        finally:
            self._calls_inside -= 1

    def _start_passes(
        self,
        model_name: str,
        agreement: QuantizationAgreement | None,
        parallel_passes: int,
        run: Callable[[list[In]], list[Out]],
        warm_up: In,
    ) -> ForwardMerger[In, Out]:
        """The replica's state and forward threads, one warm-up pass of `run` (before Serve
        reports the replica healthy: the first pass is the slow one), and the pass merger the
        batch method submits to."""
        self._init_replica(model_name, agreement, parallel_passes=parallel_passes)
        if (warning := spinning_threads_warning(os.environ)) is not None:
            logger.warning(warning)
        run([warm_up])
        return self._merged_forward(run)

    def _merged_forward(self, run: Callable[[list[In]], list[Out]]) -> ForwardMerger[In, Out]:
        """Forward passes of `run` on the forward threads, merging batches that wait for one."""
        return ForwardMerger(
            self._forward_pool,
            run,
            self._observer.observe,
            time.monotonic,
            self._parallel_passes,
        )

    async def _forward(self, merger: ForwardMerger[In, Out], batch: list[Timed[In]]) -> list[Out]:
        """Serve's batch, out of its queue, to the merger; passes may merge several of Serve's
        batches, up to the replica's batch size."""
        self._in_batch_queue.difference_update(id(timed) for timed in batch)
        return await merger.submit(batch, self._settings.max_batch_size)

    def describe(self) -> dict[str, object]:
        """The replica's card for /v1/models: task, the model's own description, how a
        quantized model agreed with its unquantized self, and the batching settings."""
        return {
            "task": self.task,
            **self._model.describe(),
            "quantization_agreement": self._agreement.as_dict() if self._agreement else None,
            "batching": self._batching_card(),
        }

    def _batching_card(self) -> dict[str, object]:
        return self._settings.model_dump()

    def record_autoscaling_stats(self) -> dict[str, float]:
        return self._observer.autoscaling_stats()

    def batch_sizes(self) -> list[int]:
        """Sizes of recent forward passes on this replica, oldest first."""
        return self._observer.record.sizes()

    def reset_batch_sizes(self) -> None:
        self._observer.record.clear()

    async def replica_info(self) -> dict[str, object]:
        """Which process answers, and the CPU priorities its threads run at: for tests and
        operators checking restarts, failures and who gets the cores first."""
        context = serve.get_replica_context()
        loop = asyncio.get_running_loop()
        forward = await loop.run_in_executor(self._forward_pool, thread_niceness)
        return {
            "pid": os.getpid(),
            "replica_id": context.replica_id.unique_id,
            "niceness": {"event_loop": thread_niceness(), "forward": forward},
        }


def spinning_threads_warning(environ: Mapping[str, str]) -> str | None:
    """What to tell the operator where `MODEL_RUNTIME_ENV` did not reach this replica: a
    deployment's `ray_actor_options` in the config replace the code's whole dict, runtime_env
    included, so a config that sets `num_cpus` drops it unless it repeats it."""
    if "OMP_WAIT_POLICY" in environ:
        return None
    return (
        "OMP_WAIT_POLICY is not set in this replica, so torch's threads spin while they wait and "
        "take the CPU the ingress and other replicas need (4x less throughput measured on shared "
        "cores). A deployment's ray_actor_options in the config replace the code's, runtime_env "
        "included: add runtime_env: {env_vars: {OMP_WAIT_POLICY: PASSIVE}} to them, as "
        "serve_config.yaml does (or set it to another value on purpose to silence this)."
    )


def thread_niceness() -> int:
    """The calling thread's niceness (the process's, where threads have none of their own)."""
    if not sys.platform.startswith("linux"):
        return os.getpriority(os.PRIO_PROCESS, 0)
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(by: int) -> None:
    """Raise the calling thread's niceness by `by` (at most to 19); only Linux has per-thread
    niceness, elsewhere this does nothing rather than slow the whole process."""
    if not sys.platform.startswith("linux"):
        return
    try:
        niceness = min(19, thread_niceness() + by)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError:  # a sandbox that forbids it: the passes run at the usual priority
        return
