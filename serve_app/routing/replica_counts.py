"""How many replicas each model deployment has, read from the Serve controller without sending
the models a request (a request to a deployment at zero replicas would start one).

The read is the controller's details of every application, the dict `serve.status()` counts
replica states from (`ServeInstanceDetails._get_status`), taken through Serve's client as the
ingress's start-up check takes them, without `serve.status()`'s validation of the whole answer:
measured from inside a replica on 2 shared cores, `serve.status()` took about 20 ms a read (30-70
ms at worst), the controller call alone 2.5 ms; each read runs on a worker thread and holds
Python's lock for its parsing, and with reads every 2 s `serve.status()` added 10-25 ms to the
slowest 0.1% of lone requests. The controller answers from the state its control loop (every
0.1 s) keeps, so a count is at most one tick old. It is a blocking call, so it runs on a worker
thread, one at a time: a controller that hangs costs one thread, not one per asker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

logger = logging.getLogger("ray.serve")

# Serve's replica states (ray.serve._private.common.ReplicaState, a private str enum whose members
# equal their names; the details give members or names). Requests are routed to these:
_ROUTABLE = frozenset({"RUNNING", "PENDING_MIGRATION"})
# On their way to routable (placed, loading, reconfiguring, or found again after a restart):
_STARTING = frozenset({"STARTING", "UPDATING", "RECOVERING"})
# STOPPING and STOPPED replicas count as gone: a request would start a new one.


@dataclass(frozen=True)
class ReplicaCount:
    running: int
    starting: int

    @property
    def at_zero(self) -> bool:
        """No replica runs or starts: a request sent now would start one."""
        return self.running + self.starting == 0


def replica_count(replica_states: Mapping[Any, int]) -> ReplicaCount:
    """The count in one deployment's replicas by state (state names or Serve's str enum)."""
    return ReplicaCount(
        running=sum(n for state, n in replica_states.items() if state in _ROUTABLE),
        starting=sum(n for state, n in replica_states.items() if state in _STARTING),
    )


class ReplicaCounts(Protocol):
    async def read(self, deployments: Sequence[str]) -> dict[str, ReplicaCount | None]:
        """Each deployment's count; None where it is unknown (controller unreachable, or no
        such deployment in the application)."""
        ...


class UnknownReplicaCounts:
    """Every count unknown: where no controller is reachable (the Ray-free API in tests)."""

    async def read(self, deployments: Sequence[str]) -> dict[str, ReplicaCount | None]:
        return dict.fromkeys(deployments)


def serve_details() -> Mapping[str, Any] | None:
    """The controller's details of every application (what `serve.status()` validates); None
    where Serve is not running."""
    client = serve.context._get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    details: Mapping[str, Any] = client.get_serve_details()
    return details


class ServeReplicaCounts:
    """Counts of the deployments of application `app_name`, from the controller's details."""

    def __init__(
        self,
        app_name: str,
        timeout_s: float = 2.0,
        details: Callable[[], Mapping[str, Any] | None] = serve_details,
    ) -> None:
        self._app_name = app_name
        self._timeout_s = timeout_s
        self._details = details
        self._pending: asyncio.Future[Mapping[str, Any] | None] | None = None

    async def read(self, deployments: Sequence[str]) -> dict[str, ReplicaCount | None]:
        unknown: dict[str, ReplicaCount | None] = dict.fromkeys(deployments)
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._details))
            self._pending.add_done_callback(self._clear)
        try:
            # Shielded: an asker that times out leaves the read running for the next one.
            details = await asyncio.wait_for(asyncio.shield(self._pending), self._timeout_s)
        except (TimeoutError, RayError, RayServeException) as exc:
            logger.info("replica counts are unknown: %r", exc)
            return unknown
        except Exception:
            # The counts only spare models a call: whatever breaks the read, ask them all.
            logger.error("replica counts are unknown", exc_info=True)
            return unknown
        app = ((details or {}).get("applications") or {}).get(self._app_name)
        if app is None:
            return unknown
        found = app.get("deployments") or {}
        return {
            name: replica_count(Counter(r["state"] for r in found[name].get("replicas") or ()))
            if name in found
            else None
            for name in deployments
        }

    def _clear(self, done: asyncio.Future[Mapping[str, Any] | None]) -> None:
        self._pending = None
        if not done.cancelled():
            done.exception()  # read here, so an unawaited failure is not logged as lost


class RecentReplicaCounts:
    """The running replica counts last read, for the request path, which must not wait for the
    controller: a caller gets what is known now, and a count older than `max_age_s` starts one
    read in the background (so a count lags the controller by about `max_age_s`)."""

    def __init__(
        self,
        counts: ReplicaCounts,
        deployments: Sequence[str],
        max_age_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counts = counts
        self._deployments = list(deployments)
        self._max_age_s = max_age_s
        self._clock = clock
        self._known: dict[str, ReplicaCount | None] = dict.fromkeys(self._deployments)
        self._read_s: float | None = None
        self._reading: asyncio.Task[None] | None = None

    def running(self, deployment: str) -> int | None:
        """Replicas of `deployment` that take requests; None while unknown. Call from the event
        loop."""
        stale = self._read_s is None or self._clock() - self._read_s >= self._max_age_s
        if stale and self._reading is None:
            self._reading = asyncio.get_running_loop().create_task(self._read())
        count = self._known.get(deployment)
        return None if count is None else count.running

    async def _read(self) -> None:
        try:
            self._known = await self._counts.read(self._deployments)
        except Exception:  # nobody awaits this task: keep the last counts, say why here
            logger.exception("reading replica counts failed")
        finally:
            self._read_s, self._reading = self._clock(), None


def replica_share(per_model_replica: int, model_replicas: int | None, ingress_replicas: int) -> int:
    """One ingress replica's part of `per_model_replica` for each running replica of a model
    (several ingress replicas together send what one would), at least 1. A count that is unknown,
    or zero (the first call starts a replica), counts as one replica."""
    replicas = max(1, model_replicas or 0)
    return max(1, math.ceil(per_model_replica * replicas / max(1, ingress_replicas)))
