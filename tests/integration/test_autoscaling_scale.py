"""Our autoscaling policy on a real Serve instance: up under load, back down after.

The deployment is the simulated accelerator (``a + b * batch`` of
``asyncio.sleep``), so its capacity is known from ``a``, ``b`` and the
batching knobs (``autoscaling.simulator.service_model``), and the replica count the
policy should settle on follows from the offered rate. Replica counts come
from ``serve.status()``, never from the test's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from ray import serve
from ray.serve import Deployment
from ray.serve._private.common import ReplicaState

from autoscaling.simulator.service_model import ServiceModel
from deployments.simulated.deployment import SimulatedAccelerator
from tests.integration.conftest import ServeCluster
from tests.support.serve_apps import delete_app

APP = "autoscale-sim"
PREFIX = "/autoscale-sim"
DEPLOYMENT = "SimulatedAccelerator"

SERVICE = ServiceModel(a_s=0.02, b_s=0.005, max_batch_size=8, batch_wait_timeout_s=0.01)
OFFERED_RPS = 100.0
UTILIZATION = 0.8
HEADROOM = 0.85
# Fewer replicas than this cannot keep up at all (~56 rps each).
MIN_EXPECTED = SERVICE.replicas_for(OFFERED_RPS)
# The policy keeps rate / (capacity * utilization) replicas and removes one only below
# rate / (capacity * utilization * headroom); one more for a noisy throughput window.
MAX_EXPECTED = SERVICE.replicas_for(OFFERED_RPS, UTILIZATION * HEADROOM) + 1
MAX_REPLICAS = MAX_EXPECTED + 2

SCALE_UP_WITHIN_S = 60.0
SETTLE_WITHIN_S = 60.0
SETTLED_FOR_S = 5.0
SCALE_DOWN_WITHIN_S = 60.0
POLL_S = 0.5

POLICY_KWARGS: dict[str, Any] = {
    "latency_target_ms": 250,
    "latency_percentile": 95,
    "target_queue_per_replica": round(SERVICE.suggested_queue_target(UTILIZATION), 2),
    "replica_capacity_rps": round(SERVICE.max_rate_rps(), 1),
    "target_utilization": UTILIZATION,
    "downscale_headroom": HEADROOM,
    "upscale_delay_s": 1.0,
    "downscale_delay_s": 3.0,
    "cooldown_s": 5.0,
    "metrics_max_age_s": 5.0,
    "min_latency_samples": 10,
}
AUTOSCALING_CONFIG: dict[str, Any] = {
    "min_replicas": 1,
    "initial_replicas": 1,
    "max_replicas": MAX_REPLICAS,
    # The policy applies its own delays; Ray's would stack on top.
    "upscale_delay_s": 0,
    "downscale_delay_s": 0,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2.0,
    "policy": {
        "policy_function": "autoscaling.policy:QueueLatencyPolicy",
        "policy_kwargs": POLICY_KWARGS,
    },
}
USER_CONFIG = {
    "max_batch_size": SERVICE.max_batch_size,
    "batch_wait_timeout_s": SERVICE.batch_wait_timeout_s,
    "service_a_s": SERVICE.a_s,
    "service_b_s": SERVICE.b_s,
}


def running_replicas() -> int:
    """RUNNING replicas of the deployment, as Serve reports them."""
    app = serve.status().applications[APP]
    return app.deployments[DEPLOYMENT].replica_states.get(ReplicaState.RUNNING, 0)


@dataclass
class Load:
    """Open-loop load at a fixed rate, with a cap on requests in flight."""

    handle: Any
    rate_rps: float
    max_in_flight: int = 256
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        next_at = loop.time()
        while not self.stop.is_set():
            if len(in_flight) < self.max_in_flight:
                task = asyncio.create_task(self._one())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                self.sent += 1
            else:
                self.skipped += 1
            next_at += 1.0 / self.rate_rps
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.gather(*in_flight, return_exceptions=True)

    async def _one(self) -> None:
        try:
            await self.handle.infer.remote("x")
        except Exception:  # noqa: BLE001  (counted and asserted on, not hidden)
            self.failed += 1


async def wait_until(
    condition: Callable[[int], bool], within_s: float, history: list[tuple[float, int]]
) -> float:
    """Seconds until ``condition(running replicas)`` holds; fails after ``within_s``."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        count = await asyncio.to_thread(running_replicas)
        history.append((round(time.monotonic() - start, 1), count))
        if condition(count):
            return time.monotonic() - start
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"not reached within {within_s}s; (s, replicas): {history}")


async def wait_settled(history: list[tuple[float, int]]) -> float:
    """Seconds until the count stays in range for ``SETTLED_FOR_S``."""
    start = time.monotonic()
    in_range_since: float | None = None
    while time.monotonic() - start < SETTLE_WITHIN_S:
        count = await asyncio.to_thread(running_replicas)
        now = time.monotonic()
        history.append((round(now - start, 1), count))
        if MIN_EXPECTED <= count <= MAX_EXPECTED:
            in_range_since = in_range_since or now
            if now - in_range_since >= SETTLED_FOR_S:
                return now - start
        else:
            in_range_since = None
        await asyncio.sleep(POLL_S)
    expected = f"[{MIN_EXPECTED}, {MAX_EXPECTED}]"
    raise AssertionError(f"not within {expected} for {SETTLED_FOR_S}s; (s, replicas): {history}")


async def scenario() -> dict[str, Any]:
    handle = serve.get_app_handle(APP)
    load = Load(handle, OFFERED_RPS)
    history: list[tuple[float, int]] = []
    load_task = asyncio.create_task(load.run())
    try:
        up_s = await wait_until(lambda n: n >= MIN_EXPECTED, SCALE_UP_WITHIN_S, history)
        settled_s = await wait_settled(history)
        peak = max(count for _, count in history)
    finally:
        load.stop.set()
        await load_task
    down_s = await wait_until(lambda n: n == 1, SCALE_DOWN_WITHIN_S, history)
    return {
        "up_s": up_s,
        "settled_s": settled_s,
        "down_s": down_s,
        "peak": peak,
        "load": load,
        "history": history,
    }


def controller_log_lines(pattern: str) -> list[str]:
    """Lines of the Serve controller's log (what the dashboard shows) containing ``pattern``."""
    import ray

    node = ray._private.worker.global_worker.node
    assert node is not None
    session_dir = node.get_session_dir_path()
    lines: list[str] = []
    for path in glob.glob(os.path.join(session_dir, "logs", "serve", "controller_*.log")):
        with open(path, encoding="utf-8", errors="replace") as log:
            lines.extend(line for line in log if pattern in line)
    return lines


@pytest.mark.timeout(240)
def test_policy_scales_with_load_and_back(serve_cluster: ServeCluster) -> None:
    # What a, b, the batching knobs and the offered rate imply (see the constants).
    assert (MIN_EXPECTED, MAX_EXPECTED) == (2, 4)
    app = (
        cast(Deployment, SimulatedAccelerator)
        .options(autoscaling_config=AUTOSCALING_CONFIG, user_config=USER_CONFIG)
        .bind(stats_window_s=5.0)
    )
    serve.run(app, name=APP, route_prefix=PREFIX)
    try:
        reply = httpx.post(serve_cluster.base_url + PREFIX, content=b"hello", timeout=30)
        assert reply.status_code == 200
        assert reply.json()["payload"] == "hello"
        assert running_replicas() == 1

        outcome = asyncio.run(scenario())

        load: Load = outcome["load"]
        print(  # the timeline, for whoever reads the -s output
            f"up in {outcome['up_s']:.1f}s, settled in {outcome['settled_s']:.1f}s more, "
            f"down in {outcome['down_s']:.1f}s; peak {outcome['peak']}; sent {load.sent}, "
            f"skipped {load.skipped}; (s, replicas): {outcome['history']}"
        )
        assert load.failed == 0, outcome
        assert load.sent > OFFERED_RPS * 5, outcome
        assert outcome["peak"] <= MAX_REPLICAS
        decisions = controller_log_lines(f"Autoscaling {DEPLOYMENT}: scale up")
        assert decisions, "the policy's scale-up decision is not in the controller log"
        assert "queue" in decisions[0]
        assert "p95" in decisions[0]
        assert controller_log_lines(f"Autoscaling {DEPLOYMENT}: scale down")
    finally:
        delete_app(APP)
