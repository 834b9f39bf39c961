"""Discrete-event simulation of one autoscaled, batched Serve deployment.

What it models, and where from:

- arrivals: a trace (``autoscaling.simulator.traces``);
- routing: Serve's power-of-two-choices over running replicas, each taking
  at most ``max_ongoing_requests``; the rest wait at the handle in FIFO order;
- batching: ``@serve.batch`` (``autoscaling.simulator.service_model``): a batch opens
  with the first request, closes after ``batch_wait_timeout_s`` or at
  ``max_batch_size``, and queues for the replica's accelerator, which runs one
  batch at a time for ``a + b * batch`` seconds;
- scale to zero (``min_replicas: 0``): a request that finds no running replica
  waits at the handle, which pushes its metrics at once (Serve's cold-start
  push), and is served once a replica has taken ``startup_delay_s`` (load,
  warm-up) to start; ``SimResult`` counts these cold starts and their requests;
- replicas: a new one serves after ``startup_delay_s``; a removed one stops
  taking requests and finishes what it holds (starting ones are cancelled
  first, then the least busy running ones), and one that ran is gone (its
  replica-seconds end) at the first of Serve's ``graceful_shutdown_wait_loop_s``
  checks that finds it idle;
- metrics as Serve collects them: every ``min(metrics_interval_s,
  0.2 * look_back_period_s)`` the handle samples ongoing + queued requests and
  each replica calls ``ReplicaStats.snapshot``; every ``metrics_interval_s``
  the controller receives what was recorded in the last
  ``look_back_period_s``; ``total_num_requests`` is the time-weighted mean of
  those samples (Serve's MEAN aggregation);
- the controller: every ``CONTROL_LOOP_INTERVAL_S`` (Ray's 0.1 s) it builds a
  Ray ``AutoscalingContext``, runs the policy through Ray's wrapper
  (``controller_model.resolve_policy``) and clamps to min/max.

Cost is replica-seconds over the trace, starting replicas included.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from autoscaling.replica_stats import ReplicaStats
from autoscaling.simulator.controller_model import (
    CONTROL_LOOP_INTERVAL_S,
    DeploymentID,
    PolicyFn,
    RawMetrics,
    ReplicaID,
    TimeStampedValue,
    apply_bounds,
    resolve_policy,
)
from autoscaling.simulator.service_model import ServiceModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Event kinds, ordered so that at equal times completions free capacity first.
_BATCH_DONE, _BATCH_CLOSE, _REPLICA_READY, _RECORD, _PUSH, _CONTROL = range(6)


@dataclass(frozen=True)
class SimConfig:
    """The deployment and cluster around the policy."""

    service: ServiceModel = field(default_factory=ServiceModel)
    startup_delay_s: float = 5.0
    max_ongoing_requests: int = 64
    control_interval_s: float = CONTROL_LOOP_INTERVAL_S
    stats_window_s: float = 10.0
    drain_s: float = 60.0
    # Serve's graceful_shutdown_wait_loop_s (default 2 s): a stopping replica that has run
    # holds its resources at least this long.
    shutdown_wait_loop_s: float = 2.0
    seed: int = 0


@dataclass(frozen=True)
class SimResult:
    """Per-request latencies and the replica timeline of one run."""

    arrival_s: FloatArray
    latency_s: FloatArray  # inf for requests still unfinished when the run ended
    timeline_s: FloatArray  # one point per second of the trace
    offered_rps: FloatArray
    target_replicas: IntArray
    running_replicas: IntArray
    replica_seconds: float
    scale_events: int
    decisions: list[tuple[float, int, str]]  # (time, new target, policy's reason if any)
    cold_starts: int = 0  # times a replica was started with none alive
    # Requests that arrived while no replica ran: those that paid for a cold start.
    at_zero: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))

    @property
    def requests(self) -> int:
        return int(self.latency_s.size)

    def share_within(self, latency_target_s: float) -> float:
        if self.latency_s.size == 0:
            return 1.0
        return float(np.mean(self.latency_s <= latency_target_s))

    def latency_ms(self, percentile: float) -> float:
        if self.latency_s.size == 0:
            return 0.0
        return float(1e3 * np.percentile(self.latency_s, percentile))

    def p99_per_second_ms(self) -> FloatArray:
        """p99 latency of the requests arriving in each second (NaN if none)."""
        seconds = np.floor(self.arrival_s).astype(np.int64)
        out = np.full(self.timeline_s.size, np.nan)
        order = np.argsort(seconds, kind="stable")
        bounds = np.searchsorted(seconds[order], np.arange(self.timeline_s.size + 1))
        for second in range(self.timeline_s.size):
            chunk = self.latency_s[order[bounds[second] : bounds[second + 1]]]
            if chunk.size:
                out[second] = 1e3 * np.percentile(chunk, 99)
        return out


class _Replica:
    """Simulated replica state; lives only inside one simulation run."""

    def __init__(self, replica_id: ReplicaID, created_at: float, window_s: float) -> None:
        self.replica_id = replica_id
        self.created_at = created_at
        self.stopped_at: float | None = None
        self.stop_requested_at: float | None = None
        self.running = False
        self.stopping = False
        self.ongoing = 0
        self.open_batch: list[tuple[float, float]] | None = None  # (arrival, entered)
        self.open_batch_id = 0
        self.closed_batches: deque[list[tuple[float, float]]] = deque()
        self.busy = False
        self.stats = ReplicaStats(window_s=window_s)
        self.recorded: dict[str, list[TimeStampedValue]] = {}


class _Simulation:
    def __init__(
        self,
        arrivals: FloatArray,
        duration_s: float,
        config: AutoscalingConfig,
        sim: SimConfig,
    ) -> None:
        self.arrivals = arrivals.tolist()
        self.duration_s = duration_s
        self.config = config
        self.sim = sim
        self.service = sim.service
        self.policy: PolicyFn = resolve_policy(config)
        self.rng = random.Random(sim.seed)
        self.deployment_id = DeploymentID(name="model", app_name="sim")
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.replicas: list[_Replica] = []
        self.running: list[_Replica] = []
        self.handle_queue: deque[float] = deque()
        self.target = config.initial_replicas or config.min_replicas
        self.policy_state: dict[str, Any] = {}
        self.last_scale_up: float | None = None
        self.last_scale_down: float | None = None
        self.handle_samples: list[tuple[float, float]] = []
        self.handle_pushed: list[tuple[float, float]] = []
        self.raw_pushed: RawMetrics = {}
        self.raw_view: RawMetrics | None = None  # raw_pushed for running replicas
        self.done_arrival: list[float] = []
        self.done_latency: list[float] = []
        self.decisions: list[tuple[float, int, str]] = []
        self.scale_events = 0
        self.next_replica = 0
        self.cold_starts = 0
        self.arrived_at_zero: set[float] = set()

    # -- events -------------------------------------------------------------

    def push(self, at: float, kind: int, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, kind, self.seq, payload))

    def run(self) -> SimResult:
        record_s = min(self.config.metrics_interval_s, 0.2 * self.config.look_back_period_s)
        self.push(0.0, _RECORD, record_s)
        self.push(0.0, _PUSH, self.config.metrics_interval_s)
        self.push(0.0, _CONTROL, self.sim.control_interval_s)
        self.scale_to(self.target, 0.0)
        for replica in self.replicas:  # the initial replicas exist before traffic
            self.mark_running(replica, 0.0)
        timeline = self.loop(record_s)
        return self.result(*timeline)

    def loop(self, record_s: float) -> tuple[list[int], list[int]]:
        arrivals, index, total = self.arrivals, 0, len(self.arrivals)
        end_s = self.duration_s + self.sim.drain_s
        targets: list[int] = []
        running: list[int] = []
        next_second = 0.0
        while self.events:
            at = self.events[0][0]
            if index < total and arrivals[index] <= at:
                self.route(arrivals[index], arrivals[index])
                index += 1
                continue
            if at > end_s:
                break
            _, kind, _, payload = heapq.heappop(self.events)
            if kind == _BATCH_DONE:
                self.batch_done(at, *payload)
            elif kind == _BATCH_CLOSE:
                replica, batch_id = payload
                if replica.open_batch is not None and replica.open_batch_id == batch_id:
                    self.close_batch(replica, at)
            elif kind == _REPLICA_READY:
                if not (payload.stopping or payload.running):
                    self.mark_running(payload, at)
            elif kind == _RECORD:
                self.record(at)
                self.push(at + record_s, _RECORD, payload)
            elif kind == _PUSH:
                self.push_metrics(at)
                self.push(at + payload, _PUSH, payload)
            else:
                while next_second <= at and next_second < self.duration_s:
                    targets.append(self.target)
                    running.append(len(self.running))
                    next_second += 1.0
                if at >= self.duration_s and index >= total and self.idle():
                    break
                self.control(at)
                self.push(at + payload, _CONTROL, payload)
        return targets, running

    def idle(self) -> bool:
        return not self.handle_queue and all(r.ongoing == 0 for r in self.replicas)

    # -- requests -----------------------------------------------------------

    def route(self, arrival: float, now: float) -> None:
        """Power of two choices among running replicas with room, else the handle queue."""
        running, limit = self.running, self.sim.max_ongoing_requests
        chosen: _Replica | None = None
        if len(running) == 1:
            chosen = running[0]
        elif running:
            count, draw = len(running), self.rng.random
            i, j = int(draw() * count), int(draw() * (count - 1))
            first, second = running[i], running[j + (j >= i)]
            chosen = first if first.ongoing <= second.ongoing else second
            if chosen.ongoing >= limit:
                chosen = min(running, key=lambda r: r.ongoing)
        if chosen is None or chosen.ongoing >= limit:
            self.handle_queue.append(arrival)
            if not running:
                self.arrived_at_zero.add(arrival)
                # Serve's router pushes at once when it queues for a deployment at zero.
                self.record(now)
                self.push_metrics(now)
            return
        self.enqueue(chosen, arrival, now)

    def enqueue(self, replica: _Replica, arrival: float, now: float) -> None:
        replica.ongoing += 1
        if replica.open_batch is None:
            replica.open_batch = []
            replica.open_batch_id += 1
            timeout_s = self.service.batch_wait_timeout_s
            self.push(now + timeout_s, _BATCH_CLOSE, (replica, replica.open_batch_id))
        replica.open_batch.append((arrival, now))
        if len(replica.open_batch) >= self.service.max_batch_size:
            self.close_batch(replica, now)

    def close_batch(self, replica: _Replica, now: float) -> None:
        assert replica.open_batch is not None
        replica.closed_batches.append(replica.open_batch)
        replica.open_batch = None
        if not replica.busy:
            self.start_batch(replica, now)

    def start_batch(self, replica: _Replica, now: float) -> None:
        batch = replica.closed_batches.popleft()
        replica.busy = True
        done_at = now + self.service.service_time_s(len(batch))
        self.push(done_at, _BATCH_DONE, (replica, batch, now))

    def batch_done(
        self, now: float, replica: _Replica, batch: list[tuple[float, float]], started: float
    ) -> None:
        for arrival, entered in batch:
            self.done_arrival.append(arrival)
            self.done_latency.append(now - arrival)
            replica.stats.observe(now - entered, started - entered, now)
        replica.ongoing -= len(batch)
        replica.busy = False
        if replica.closed_batches:
            self.start_batch(replica, now)
        if replica.stopping:
            if replica.ongoing == 0:
                replica.stopped_at = self.stopped_after_drain(replica, now)
            return
        while self.handle_queue and replica.ongoing < self.sim.max_ongoing_requests:
            self.enqueue(replica, self.handle_queue.popleft(), now)

    # -- replicas -----------------------------------------------------------

    def mark_running(self, replica: _Replica, now: float) -> None:
        replica.running = True
        self.running.append(replica)
        while self.handle_queue and replica.ongoing < self.sim.max_ongoing_requests:
            self.enqueue(replica, self.handle_queue.popleft(), now)

    def scale_to(self, target: int, now: float) -> None:
        alive = [r for r in self.replicas if not r.stopping]
        if not alive and target > 0 and now > 0:
            self.cold_starts += 1
        for _ in range(target - len(alive)):
            self.next_replica += 1
            replica_id = ReplicaID(f"r{self.next_replica}", deployment_id=self.deployment_id)
            replica = _Replica(replica_id, now, self.sim.stats_window_s)
            self.replicas.append(replica)
            self.push(now + self.sim.startup_delay_s, _REPLICA_READY, replica)
        if target >= len(alive):
            return
        # Serve stops replicas that are still starting first, then the least busy.
        victims = sorted(alive, key=lambda r: (r.running, r.ongoing, -r.created_at))
        for replica in victims[: len(alive) - target]:
            replica.stopping = True
            if replica.running:
                self.running.remove(replica)
                self.raw_view = None
            replica.stop_requested_at = now
            if replica.ongoing == 0:
                replica.stopped_at = self.stopped_after_drain(replica, now)
            elif replica.open_batch is not None:
                self.close_batch(replica, now)  # a stopping replica drains, no new batch

    def stopped_after_drain(self, replica: _Replica, drained_at: float) -> float:
        """When a stopping replica is gone. One that never ran stops at once; one that ran
        checks for requests only after each ``graceful_shutdown_wait_loop_s``, the first
        check one loop after the stop (Serve's ``_drain_ongoing_requests``)."""
        requested_at = replica.stop_requested_at
        loop_s = self.sim.shutdown_wait_loop_s
        if not replica.running or requested_at is None or loop_s <= 0:
            return drained_at
        loops = max(1, math.ceil((drained_at - requested_at) / loop_s - 1e-9))
        return requested_at + loops * loop_s

    # -- metrics and control --------------------------------------------------

    def record(self, now: float) -> None:
        ongoing = sum(r.ongoing for r in self.running) + len(self.handle_queue)
        self.handle_samples.append((now, float(ongoing)))
        for replica in self.running:
            for key, value in replica.stats.snapshot(now).items():
                replica.recorded.setdefault(key, []).append(TimeStampedValue(now, value))

    def push_metrics(self, now: float) -> None:
        horizon = now - self.config.look_back_period_s
        self.handle_samples = [s for s in self.handle_samples if s[0] >= horizon]
        self.handle_pushed = list(self.handle_samples)
        raw: RawMetrics = {}
        for replica in self.running:
            for key, series in replica.recorded.items():
                kept = [point for point in series if point.timestamp >= horizon]
                replica.recorded[key] = kept
                raw.setdefault(key, {})[replica.replica_id] = list(kept)
        self.raw_pushed = raw
        self.raw_view = None

    def total_num_requests(self, now: float) -> float:
        """Time-weighted mean of the pushed samples, the last held until now."""
        horizon = now - self.config.look_back_period_s
        points = [s for s in self.handle_pushed if s[0] >= horizon]
        if not points:
            return 0.0
        area = 0.0
        for (t0, value), (t1, _) in zip(points, [*points[1:], (now, 0.0)], strict=True):
            area += value * (t1 - t0)
        span = now - points[0][0]
        return area / span if span > 0 else points[-1][1]

    def control(self, now: float) -> None:
        running_ids = [r.replica_id for r in self.running]
        if self.raw_view is None:
            alive = set(running_ids)
            self.raw_view = {
                key: {rid: s for rid, s in per.items() if rid in alive}
                for key, per in self.raw_pushed.items()
            }
        ctx = AutoscalingContext(
            deployment_id=self.deployment_id,
            deployment_name=self.deployment_id.name,
            app_name=self.deployment_id.app_name,
            current_num_replicas=len(self.running),
            target_num_replicas=self.target,
            running_replicas=running_ids,
            total_num_requests=lambda: self.total_num_requests(now),
            total_queued_requests=lambda: float(len(self.handle_queue)),
            aggregated_metrics=None,
            raw_metrics=self.raw_view,
            capacity_adjusted_min_replicas=self.config.min_replicas,
            capacity_adjusted_max_replicas=self.config.max_replicas,
            policy_state=dict(self.policy_state),
            last_scale_up_time=self.last_scale_up,
            last_scale_down_time=self.last_scale_down,
            current_time=now,
            config=self.config,
        )
        decision, self.policy_state = self.policy(ctx)
        new_target = apply_bounds(decision, self.config)
        if new_target == self.target:
            return
        if new_target > self.target:
            self.last_scale_up = now
        else:
            self.last_scale_down = now
        self.scale_events += 1
        self.decisions.append((now, new_target, str(self.policy_state.get("qlp_reason", ""))))
        self.target = new_target
        self.scale_to(new_target, now)

    # -- results --------------------------------------------------------------

    def result(self, targets: list[int], running: list[int]) -> SimResult:
        arrival = np.asarray(self.done_arrival, dtype=np.float64)
        latency = np.asarray(self.done_latency, dtype=np.float64)
        unfinished = len(self.arrivals) - arrival.size
        if unfinished:
            finished = set(self.done_arrival)
            late = [a for a in self.arrivals if a not in finished]
            arrival = np.concatenate([arrival, np.asarray(late)])
            latency = np.concatenate([latency, np.full(len(late), np.inf)])
        seconds = math.ceil(self.duration_s)
        offered, _ = np.histogram(np.asarray(self.arrivals), bins=seconds, range=(0, seconds))
        return SimResult(
            arrival_s=arrival,
            latency_s=latency,
            timeline_s=np.arange(seconds, dtype=np.float64),
            offered_rps=offered.astype(np.float64),
            target_replicas=np.asarray(targets[:seconds], dtype=np.int64),
            running_replicas=np.asarray(running[:seconds], dtype=np.int64),
            replica_seconds=self.replica_seconds(),
            scale_events=self.scale_events,
            decisions=self.decisions,
            cold_starts=self.cold_starts,
            at_zero=np.asarray([a in self.arrived_at_zero for a in arrival.tolist()]),
        )

    def replica_seconds(self) -> float:
        end = self.duration_s
        total = 0.0
        for replica in self.replicas:
            stop = end if replica.stopped_at is None else min(replica.stopped_at, end)
            total += max(0.0, stop - min(replica.created_at, end))
        return total


def simulate(
    arrivals: FloatArray,
    duration_s: float,
    config: AutoscalingConfig,
    sim: SimConfig | None = None,
) -> SimResult:
    """Run ``arrivals`` through a deployment autoscaled by ``config``'s policy."""
    return _Simulation(arrivals, duration_s, config, sim or SimConfig()).run()
