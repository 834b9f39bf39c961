"""The simulator against the real service: its traces replayed on Ray, next to its predictions.

    python -m benchmarks.autoscaling_replay --out DIR        (make bench-autoscaling)

Each trace (spike and on/off, scaled to this machine: a 20 req/s base, 90 s) runs on a real
Serve instance once per policy, ours and Ray's default, every other setting equal. The trace's
arrivals go open loop through a deployment handle to the simulated accelerator
(``deployments.simulated``: ``a + b * batch`` of sleep, ``num_cpus: 0``, so replicas are cheap),
which Ray's own controller autoscales from the metrics Ray collects. The same arrivals,
autoscaling config and pass times then go through the simulator. Printed side by side: share
within the latency target, p99, replica-seconds, peak replicas and scale decisions, with every
difference over 10% flagged; ``replay.json`` and one PNG per trace (real and simulated lines on
the same axes) go to DIR.

Requests go through a handle, not HTTP: the simulator models a deployment behind a handle (the
ingress's calls to a model); the HTTP layers in front are what ``make bench`` measures.
Replica counts and lives come from the controller (``get_serve_details``), never from the
load generator's bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from ray import serve
from ray.serve import Deployment
from ray.serve.config import AutoscalingConfig

from autoscaling.simulator.compare import Setup
from autoscaling.simulator.report import OURS, OurSetting, Row, plot_trace, ray_label
from autoscaling.simulator.service_model import ServiceModel
from autoscaling.simulator.simulation import SimConfig, SimResult, simulate
from autoscaling.simulator.traces import Trace, on_off, spike
from benchmarks.loadgen import dispatch_on_schedule
from deployments.simulated.deployment import SimulatedAccelerator

APP = "autoscaling-replay"
DEPLOYMENT = "replayed-model"  # its own name: the controller log shows its decisions apart
POLL_S = 0.25
REQUEST_TIMEOUT_S = 30.0
MAX_DIFFERENCE = 0.10  # a real figure further than this from the prediction is flagged
RAY_TARGET = 2.0  # Ray's default policy at its stock target_ongoing_requests
# One pass of b items takes 0.05 + 0.01 * b s: about 19 req/s per replica at light batching.
REPLAY_SERVICE = ServiceModel(a_s=0.05, b_s=0.01, max_batch_size=8, batch_wait_timeout_s=0.01)


def replay_setup(base_rps: float = 20.0, duration_s: float = 90.0, seed: int = 1) -> Setup:
    """The comparison's knobs scaled to 2 cores: a few replicas at the base rate, seven at the
    spike, a downscale delay that fits the trace. Our burst headroom is 3.5x the base, as in
    the simulator's comparison."""
    return Setup(
        base_rps=base_rps,
        duration_s=duration_s,
        seed=seed,
        default_setting=OurSetting(0.8, 3.5 * base_rps),
        sim=SimConfig(service=REPLAY_SERVICE, startup_delay_s=2.0),
        max_replicas=10,
        downscale_delay_s=15.0,
    )


def replay_traces(setup: Setup) -> list[Trace]:
    """Spike (5x the base for the middle third) and on/off (3x the base, two periods)."""
    base, duration = setup.base_rps, setup.duration_s
    return [spike(base, duration, 5.0, duration / 3.0), on_off(3.0 * base, duration, duration / 2)]


@dataclass
class ReplicaLife:
    """One replica as the controller showed it; wall-clock seconds."""

    created_s: float
    running_s: float | None
    last_seen_s: float


@dataclass
class ReplicaWatch:
    """Polls the controller: each replica's life and the deployment's target count."""

    lives: dict[str, ReplicaLife] = field(default_factory=dict)
    targets: list[tuple[float, int]] = field(default_factory=list)

    def sample(self) -> None:
        client = serve.context._get_global_client()
        assert client is not None, "no Serve instance"
        details = client.get_serve_details()
        deployment = details["applications"][APP]["deployments"][DEPLOYMENT]
        now = time.time()
        self.targets.append((now, int(deployment["target_num_replicas"])))
        for replica in deployment["replicas"]:
            life = self.lives.get(replica["replica_id"])
            if life is None:
                life = ReplicaLife(min(now, float(replica["start_time_s"])), None, now)
                self.lives[replica["replica_id"]] = life
            life.last_seen_s = now
            if replica["state"] == "RUNNING" and life.running_s is None:
                life.running_s = now

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(POLL_S)

    def replica_seconds(self, start_s: float, end_s: float) -> float:
        return sum(
            max(0.0, min(life.last_seen_s, end_s) - max(life.created_s, start_s))
            for life in self.lives.values()
        )

    def startup_delays_s(self, after_s: float) -> list[float]:
        """Creation to RUNNING of the replicas created after ``after_s``."""
        return [
            life.running_s - life.created_s
            for life in self.lives.values()
            if life.running_s is not None and life.created_s > after_s
        ]

    def per_second(self, start_s: float, seconds: int) -> tuple[list[int], list[int]]:
        """Target and running replicas at each whole second after ``start_s``."""
        targets, running = [], []
        for second in range(seconds):
            at = start_s + second
            earlier = [count for t, count in self.targets if t <= at]
            targets.append(earlier[-1] if earlier else self.targets[0][1])
            running.append(
                sum(
                    1
                    for life in self.lives.values()
                    if life.running_s is not None and life.running_s <= at <= life.last_seen_s
                )
            )
        return targets, running

    def scale_events(self, start_s: float, end_s: float) -> int:
        counts = [count for t, count in self.targets if start_s <= t <= end_s]
        return sum(1 for a, b in itertools.pairwise(counts) if a != b)


@dataclass(frozen=True)
class RealRun:
    """One trace on Ray: the result in the simulator's terms, and what the simulator needs."""

    result: SimResult
    startup_delays_s: list[float]
    failed: int
    max_dispatch_lag_s: float

    def startup_delay_s(self, default_s: float) -> float:
        return statistics.median(self.startup_delays_s) if self.startup_delays_s else default_s


def _user_config(service: ServiceModel) -> dict[str, float]:
    return {
        "max_batch_size": service.max_batch_size,
        "batch_wait_timeout_s": service.batch_wait_timeout_s,
        "service_a_s": service.a_s,
        "service_b_s": service.b_s,
    }


def deploy(config: AutoscalingConfig, sim: SimConfig) -> Any:
    """The simulated accelerator, autoscaled by ``config``; returns its handle once running."""
    simulated = cast(Deployment, SimulatedAccelerator).options(
        name=DEPLOYMENT,
        autoscaling_config=config,
        user_config=_user_config(sim.service),
        max_ongoing_requests=sim.max_ongoing_requests,
    )
    return serve.run(simulated.bind(stats_window_s=sim.stats_window_s), name=APP, route_prefix=None)


async def replay_on_ray(
    trace: Trace, arrivals: Sequence[float], config: AutoscalingConfig, sim: SimConfig
) -> RealRun:
    """Deploy, send ``arrivals`` open loop through the handle, delete the app."""
    handle = await asyncio.to_thread(deploy, config, sim)
    watch = ReplicaWatch()
    stop = asyncio.Event()
    latency_s = [math.inf] * len(arrivals)

    async def send(index: int, due_s: float) -> None:
        try:
            await asyncio.wait_for(handle.infer.remote("replay"), REQUEST_TIMEOUT_S)
        except Exception:  # noqa: BLE001  (a failure stays inf: a miss, and counted)
            return
        latency_s[index] = time.perf_counter() - due_s

    watcher = asyncio.create_task(watch.run(stop))
    try:
        t0_perf, t0_wall = time.perf_counter() + 0.2, time.time() + 0.2
        end_wall = t0_wall + trace.duration_s

        async def stop_at_trace_end() -> None:
            await asyncio.sleep(max(0.0, end_wall - time.time()))
            stop.set()

        stopper = asyncio.create_task(stop_at_trace_end())
        lag_s = await dispatch_on_schedule(arrivals, t0_perf, send, REQUEST_TIMEOUT_S + 5.0)
        await stopper
        await watcher
    finally:
        stop.set()
        await asyncio.to_thread(serve.delete, APP)
    seconds = math.ceil(trace.duration_s)
    arrival = np.asarray(arrivals, dtype=np.float64)
    offered, _ = np.histogram(arrival, bins=seconds, range=(0, seconds))
    targets, running = watch.per_second(t0_wall, seconds)
    result = SimResult(
        arrival_s=arrival,
        latency_s=np.asarray(latency_s, dtype=np.float64),
        timeline_s=np.arange(seconds, dtype=np.float64),
        offered_rps=offered.astype(np.float64),
        target_replicas=np.asarray(targets, dtype=np.int64),
        running_replicas=np.asarray(running, dtype=np.int64),
        replica_seconds=watch.replica_seconds(t0_wall, end_wall),
        scale_events=watch.scale_events(t0_wall, end_wall),
        decisions=[],
    )
    return RealRun(
        result=result,
        startup_delays_s=watch.startup_delays_s(t0_wall),
        failed=sum(1 for latency in latency_s if math.isinf(latency)),
        max_dispatch_lag_s=lag_s,
    )


@dataclass(frozen=True)
class Side:
    """One run's figures, real or simulated."""

    row: Row
    peak_replicas: int

    @classmethod
    def of(cls, label: str, result: SimResult, latency_target_ms: float) -> Side:
        peak = int(result.target_replicas.max()) if result.target_replicas.size else 0
        return cls(Row.of(label, result, latency_target_ms), peak)


@dataclass(frozen=True)
class Comparison:
    """One trace and policy: what Ray did, what the simulator predicted, where they differ."""

    trace: str
    description: str
    policy: str
    requests: int
    real: Side
    simulated: Side
    startup_delay_s: float  # measured on Ray, given to the simulator
    failed: int
    flagged: list[str]  # figures more than MAX_DIFFERENCE apart

    @classmethod
    def of(
        cls, trace: Trace, policy: str, real: RealRun, simulated: SimResult, setup: Setup
    ) -> Comparison:
        target_ms = setup.latency_target_ms
        real_side = Side.of(f"{policy} on Ray", real.result, target_ms)
        sim_side = Side.of(f"{policy} simulated", simulated, target_ms)
        figures = {
            "within target": (real_side.row.share_within_target, sim_side.row.share_within_target),
            "p99": (real_side.row.p99_ms, sim_side.row.p99_ms),
            "replica-seconds": (real_side.row.replica_seconds, sim_side.row.replica_seconds),
        }
        flagged = [
            name
            for name, (got, predicted) in figures.items()
            if relative_gap(got, predicted) > MAX_DIFFERENCE
        ]
        return cls(
            trace=trace.name,
            description=trace.description,
            policy=policy,
            requests=real.result.requests,
            real=real_side,
            simulated=sim_side,
            startup_delay_s=real.startup_delay_s(setup.sim.startup_delay_s),
            failed=real.failed,
            flagged=flagged,
        )


def relative_gap(got: float, predicted: float) -> float:
    """|got - predicted| / predicted (0 when both are 0, inf when only the prediction is)."""
    if predicted == 0:
        return 0.0 if got == 0 else math.inf
    return abs(got - predicted) / abs(predicted)


def format_table(comparisons: Sequence[Comparison], latency_target_ms: float) -> str:
    rows = [
        f"| trace | policy | source | within {latency_target_ms:g} ms | p99 ms | replica-s "
        "| peak replicas | scale events |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        for source, side in (("Ray", c.real), ("simulator", c.simulated)):
            r = side.row
            rows.append(
                f"| {c.trace} | {c.policy} | {source} | {r.share_within_target:.2%} "
                f"| {r.p99_ms:.0f} | {r.replica_seconds:.0f} | {side.peak_replicas} "
                f"| {r.scale_events} |"
            )
    notes = [
        f"- {c.trace}, {c.policy}: replica start {c.startup_delay_s:.1f} s on Ray (given to the "
        f"simulator); {c.failed} of {c.requests} requests failed; "
        + (f"over {MAX_DIFFERENCE:.0%} apart: {', '.join(c.flagged)}" if c.flagged else "agree")
        for c in comparisons
    ]
    return "\n".join([*rows, "", *notes])


def policies(setup: Setup) -> dict[str, OurSetting | float]:
    return {OURS: setup.default_setting, ray_label(RAY_TARGET): RAY_TARGET}


async def compare_trace(
    setup: Setup, trace: Trace, policy: str, knob: OurSetting | float
) -> tuple[Comparison, SimResult, SimResult]:
    """One trace and policy on Ray, then in the simulator with the replica start measured."""
    arrivals = trace.arrivals(setup.seed)
    config = setup.config(trace, knob)
    real = await replay_on_ray(trace, arrivals.tolist(), config, setup.sim)
    sim = replace(setup.sim, startup_delay_s=real.startup_delay_s(setup.sim.startup_delay_s))
    simulated = simulate(arrivals, trace.duration_s, config, sim)
    return Comparison.of(trace, policy, real, simulated, setup), real.result, simulated


async def replay_all(setup: Setup, out: Path) -> list[Comparison]:
    """Every trace with every policy, in one event loop: a handle's router stays bound to the
    loop it first ran in."""
    comparisons: list[Comparison] = []
    for trace in replay_traces(setup):
        shown: dict[str, SimResult] = {}
        for policy, knob in policies(setup).items():
            comparison, real, simulated = await compare_trace(setup, trace, policy, knob)
            comparisons.append(comparison)
            shown[f"{policy} on Ray"] = real
            shown[f"{policy} simulated"] = simulated
            print(format_table([comparison], setup.latency_target_ms), flush=True)
        plot_trace(
            out / f"replay_{trace.name}.png", trace.description, shown, setup.latency_target_ms
        )
    return comparisons


def main(argv: Sequence[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for JSON + PNGs")
    parser.add_argument("--seed", type=int, default=1, help="arrival-time seed")
    parser.add_argument("--duration-s", type=float, default=90.0)
    parser.add_argument("--base-rps", type=float, default=20.0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    setup = replay_setup(args.base_rps, args.duration_s, args.seed)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")

    async def replay_then_shut_down() -> list[Comparison]:
        try:
            return await replay_all(setup, args.out)
        finally:
            await serve.shutdown_async()  # in the loop the handles' routers run in

    try:
        comparisons = asyncio.run(replay_then_shut_down())
    finally:
        ray.shutdown()
    table = format_table(comparisons, setup.latency_target_ms)
    print(table)
    payload = {
        "setup": {**asdict(setup), "policy_kwargs": setup.policy_kwargs()},
        "comparisons": [asdict(c) for c in comparisons],
    }
    (args.out / "replay.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "replay.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
