"""The queue-and-latency autoscaling policy for batched model deployments.

Named in ``serve_config.yaml`` as::

    autoscaling_config:
      upscale_delay_s: 0        # the policy applies its own delays
      downscale_delay_s: 0
      policy:
        policy_function: autoscaling.policy:QueueLatencyPolicy
        policy_kwargs: {latency_target_ms: 250, latency_percentile: 99,
                        target_queue_per_replica: 6.8, replica_capacity_rps: 143.7}

Serve instantiates the class once with ``policy_kwargs`` and calls it every
control-loop tick. The instance holds only its frozen parameters; every
decision is a pure function of the context, whose ``policy_state`` carries
the timers from one tick to the next and whose ``current_time`` is the only
clock. How it decides is in ``decide`` and in docs/autoscaling.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, NamedTuple

import ray

from autoscaling.decision import Decision, Direction, Phase, PolicyState
from autoscaling.params import PolicyParams
from autoscaling.policy_metrics import PolicyMetrics
from autoscaling.signals import (
    PolicyContext,
    ReplicaReadings,
    finite_or_none,
    read_queue,
    read_replicas,
)

# The Serve controller's logger: its lines land in the controller log that the
# Ray dashboard's Serve page shows.
logger = logging.getLogger("ray.serve")

# Clock arithmetic on large epoch values can land a hair short of a delay.
_DELAY_EPS_S = 1e-6


class Step(NamedTuple):
    """A candidate decision before the readings are attached."""

    num_replicas: int
    direction: Direction
    why: str
    state: PolicyState
    phase: Phase


def _clamp(num_replicas: int, ctx: PolicyContext) -> int:
    return max(
        ctx.capacity_adjusted_min_replicas,
        min(ctx.capacity_adjusted_max_replicas, num_replicas),
    )


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.1f}{unit}"


def _describe(queue: float | None, readings: ReplicaReadings, params: PolicyParams) -> str:
    p = params.latency_percentile
    return (
        f"queue {_fmt(queue)} (target {params.target_queue_per_replica:g}/replica); "
        f"p{p} {_fmt(readings.latency_ms, 'ms')} (target {params.latency_target_ms:g}ms, "
        f"{readings.latency_replicas} replicas reporting); "
        f"queue wait p{p} {_fmt(readings.queue_wait_ms, 'ms')}; "
        f"throughput {_fmt(readings.throughput_rps, ' rps')}"
    )


def _needs(
    ctx: PolicyContext, queue: float | None, readings: ReplicaReadings, params: PolicyParams
) -> dict[str, int]:
    """Replicas each signal asks for; a signal with nothing to say is absent."""
    needs: dict[str, int] = {}
    if queue is not None:
        needs["queue"] = math.ceil(queue / params.target_queue_per_replica)
    threshold_ms = params.latency_upscale_ratio * params.latency_target_ms
    if readings.latency_ms is not None and readings.latency_ms > threshold_ms:
        # Proportional: as many more replicas as latency is over the threshold.
        needs["latency"] = math.ceil(ctx.current_num_replicas * readings.latency_ms / threshold_ms)
    if readings.throughput_rps is not None and params.replica_capacity_rps is not None:
        planned_rps = params.replica_capacity_rps * params.target_utilization
        needs["throughput"] = math.ceil(readings.throughput_rps / planned_rps)
    burst = _burst_replicas(readings, params, headroom=1.0)
    if burst is not None:
        needs["burst"] = burst
    return needs


def _burst_replicas(readings: ReplicaReadings, params: PolicyParams, headroom: float) -> int | None:
    """Replicas for the measured rate plus ``burst_headroom_rps``, run at full capacity.

    Full capacity, not ``target_utilization``: the spare is there to be used
    for the start-up time of the replicas a burst makes the policy add.
    """
    capacity = params.replica_capacity_rps
    if readings.throughput_rps is None or capacity is None or params.burst_headroom_rps == 0:
        return None
    return math.ceil((readings.throughput_rps + params.burst_headroom_rps) / (capacity * headroom))


def _downscale_floor(
    queue: float | None, readings: ReplicaReadings, params: PolicyParams
) -> int | None:
    """Fewest replicas every signal accepts, or None if one objects.

    Queue and throughput must fit on them with ``downscale_headroom`` to
    spare; latency must be under ``latency_downscale_ratio`` of its target, or
    absent (an idle deployment has no latency, and silence must not pin
    replicas forever). No queue reading, no scale-down.
    """
    if queue is None:
        return None
    limit_ms = params.latency_downscale_ratio * params.latency_target_ms
    if readings.latency_ms is not None and readings.latency_ms > limit_ms:
        return None
    floor = math.ceil(queue / (params.target_queue_per_replica * params.downscale_headroom))
    if readings.throughput_rps is not None and params.replica_capacity_rps is not None:
        planned_rps = params.replica_capacity_rps * params.target_utilization
        floor = max(
            floor, math.ceil(readings.throughput_rps / (planned_rps * params.downscale_headroom))
        )
    burst = _burst_replicas(readings, params, headroom=params.downscale_headroom)
    return floor if burst is None else max(floor, burst)


def _cooling_down(
    ctx: PolicyContext, state: PolicyState, params: PolicyParams, now: float, up: bool
) -> tuple[Phase, str] | None:
    """Why the signals cannot judge the current count yet, if they cannot.

    Until a change has taken effect and ``cooldown_s`` has passed, Serve's
    look-back mean and the replicas' windows still describe the old count:
    acting on them would count one overload (or one lull) twice. Replicas
    still starting block only scale-ups, so a cluster that cannot place them
    does not also pin the count when load goes away.
    """
    starting = ctx.target_num_replicas - ctx.current_num_replicas
    if up and starting > 0:
        return "starting", f"waiting for {starting} starting replicas"
    if state.settled_at_s is not None and now - state.settled_at_s < params.cooldown_s:
        return "cooldown", f"cooling down {now - state.settled_at_s:.1f}/{params.cooldown_s:g}s"
    return None


def _scale_up(
    ctx: PolicyContext, params: PolicyParams, state: PolicyState, now: float, need: int, signal: str
) -> Step:
    base = _clamp(ctx.target_num_replicas, ctx)
    candidate = _clamp(min(need, base + params.max_scale_up_step), ctx)
    if candidate <= base:
        why = f"{signal} wants {need}, capped at max_replicas"
        return Step(base, "hold", why, replace(state.steady(), descending=False), "at_max")
    since = now if state.up_since_s is None else state.up_since_s
    if now - since + _DELAY_EPS_S < params.upscale_delay_s:
        why = f"{signal} wants {need}, waiting {now - since:.1f}/{params.upscale_delay_s:g}s"
        waiting = PolicyState(up_since_s=since, settled_at_s=state.settled_at_s)
        return Step(base, "hold", why, waiting, "upscale_delay")
    why = f"scale up {base}->{candidate}: {signal} wants {need}"
    return Step(candidate, "up", why, PolicyState(pending_up=True), "scaling_up")


def _scale_down(
    ctx: PolicyContext, params: PolicyParams, state: PolicyState, now: float, floor: int
) -> Step:
    base = _clamp(ctx.target_num_replicas, ctx)
    step = max(1, math.floor(base * params.max_scale_down_fraction))
    # The last replica goes only through `_idle_to_zero`, after the idle delay.
    candidate = _clamp(max(floor, base - step, 1), ctx)
    if candidate >= base:
        why = f"all signals allow {floor}, held at {base} (zero only when idle)"
        if base == ctx.capacity_adjusted_min_replicas:
            why = f"all signals allow {floor}, held at min_replicas"
        return Step(base, "hold", why, state.steady(), "at_min")
    # The delay guards the start of a descent; once under way, each further
    # step waits only for the signals to settle on the new count (cooldown_s).
    delay_s = 0.0 if state.descending else params.downscale_delay_s
    since = now if state.down_since_s is None else state.down_since_s
    if now - since + _DELAY_EPS_S < delay_s:
        why = f"all signals allow {floor}, waiting {now - since:.1f}/{delay_s:g}s"
        waiting = replace(state.steady(), down_since_s=since)
        return Step(base, "hold", why, waiting, "downscale_delay")
    why = f"scale down {base}->{candidate}: all signals allow {floor}"
    return Step(
        candidate, "down", why, PolicyState(settled_at_s=now, descending=True), "scaling_down"
    )


def _is_idle(queue: float | None, readings: ReplicaReadings) -> bool:
    """Nothing ongoing or queued (Serve's look-back mean is exactly 0) and no replica
    reporting completed requests in its window."""
    return queue == 0 and not readings.throughput_rps


def _idle_to_zero(
    ctx: PolicyContext, params: PolicyParams, state: PolicyState, now: float, hold: int
) -> Step | None:
    """With min_replicas 0: the last replicas go once the deployment has been idle for
    ``downscale_to_zero_delay_s`` (default ``downscale_delay_s``). None when it does not apply.

    Serve's wrapper lets a deployment reach 0 only from 1, so from more it takes two ticks.
    """
    if ctx.capacity_adjusted_min_replicas > 0 or hold == 0 or state.idle_since_s is None:
        return None
    delay_s = params.downscale_to_zero_delay_s
    if delay_s is None:
        delay_s = params.downscale_delay_s
    idle_s = now - state.idle_since_s
    if idle_s + _DELAY_EPS_S < delay_s:
        why = f"idle {idle_s:.1f}/{delay_s:g}s before scaling to zero"
        return Step(hold, "hold", why, state.steady(), "idle_delay")
    why = f"scale to zero {hold}->0: idle for {idle_s:.1f}s"
    return Step(0, "down", why, PolicyState(settled_at_s=now), "scaling_to_zero")


def decide(ctx: PolicyContext, params: PolicyParams) -> Decision:
    """One autoscaling decision.

    - Cold start: no running replica and requests waiting: enough replicas
      for the queue, at once.
    - Up when any signal asks: the queue for ``queue / target_queue``
      replicas, latency for ``current * observed / (ratio * target)``,
      throughput (with ``replica_capacity_rps``) for ``rps / (capacity *
      utilization)``, and with ``burst_headroom_rps`` for ``(rps + burst) /
      capacity``. The largest wins, at most ``max_scale_up_step`` more,
      once the need has lasted ``upscale_delay_s``.
    - Down only when all allow it (see ``_downscale_floor``), after
      ``downscale_delay_s``, at most ``max_scale_down_fraction`` fewer; while
      they keep allowing it, one more such step per ``cooldown_s``.
    - Neither while replicas are starting or within ``cooldown_s`` of the
      last change taking effect (see ``_cooling_down``).
    - To zero (min_replicas 0) only through ``_idle_to_zero``: idle for
      ``downscale_to_zero_delay_s``; scale-downs otherwise stop at one replica.
    - Always within the context's capacity-adjusted min and max.
    """
    state = PolicyState.from_mapping(ctx.policy_state)
    target = ctx.target_num_replicas
    hold = _clamp(target, ctx)
    now = finite_or_none(ctx.current_time)
    if now is None:
        why = "no clock in the context"
        return Decision(hold, "hold", why, state.steady(), None, None, phase="no_clock")
    state = state.settle(ctx, now)
    queue = read_queue(ctx)
    readings = read_replicas(ctx, params, now)
    idle_since_s = (
        (now if state.idle_since_s is None else state.idle_since_s)
        if _is_idle(queue, readings)
        else None
    )
    state = replace(state, idle_since_s=idle_since_s)
    described = _describe(queue, readings, params)
    needs = _needs(ctx, queue, readings, params)

    def decision(step: Step) -> Decision:
        num, direction, why, new_state, phase = step
        if num != target and direction == "hold":
            direction = "up" if num > target else "down"
            why = f"bounds moved {target}->{num}; {why}"
            phase = "bounds"
        reason = f"{why}; {described}"
        # The idle timer runs across every step: only a request stops it.
        new_state = replace(new_state, idle_since_s=idle_since_s, at_zero=state.at_zero)
        return Decision(num, direction, reason, new_state, queue, readings, phase, needs)

    if ctx.current_num_replicas == 0 and queue:
        need = _clamp(max(1, hold, needs.get("queue", 1)), ctx)
        if need == hold:
            why = f"cold start: waiting for {hold} replicas"
            return decision(Step(hold, "hold", why, state.steady(), "starting"))
        why = f"cold start {target}->{need}"
        return decision(Step(need, "up", why, PolicyState(pending_up=True), "scaling_up"))

    to_zero = _idle_to_zero(ctx, params, state, now, hold)
    if to_zero is not None and (to_zero.direction == "down" or hold == 1):
        return decision(to_zero)

    signal, need = max(needs.items(), key=lambda item: item[1], default=("none", 0))
    floor = _downscale_floor(queue, readings, params)
    wants = f"{signal} wants {need}" if need > hold else f"all signals allow {floor}"
    if need > hold or (floor is not None and floor < hold):
        blocker = _cooling_down(ctx, state, params, now, up=need > hold)
        if blocker is not None:
            phase, why = blocker
            # An upscale need ends a descent even while it has to wait.
            waiting = replace(state.steady(), descending=state.descending and need <= hold)
            return decision(Step(hold, "hold", f"{wants}, {why}", waiting, phase))
    if need > hold:
        return decision(_scale_up(ctx, params, state, now, need, signal))
    if floor is not None and floor < hold:
        return decision(_scale_down(ctx, params, state, now, floor))
    steady = replace(state.steady(), descending=False)
    return decision(Step(hold, "hold", "within targets", steady, "steady"))


class QueueLatencyPolicy:
    """Serve's entry point: ``policy_function: autoscaling.policy:QueueLatencyPolicy``."""

    def __init__(self, **policy_kwargs: Any) -> None:
        self.params = PolicyParams(**policy_kwargs)
        # Created on first use inside Ray (the controller); the simulator has no Ray.
        self._metrics: PolicyMetrics | None = None

    def __call__(self, ctx: PolicyContext) -> tuple[int, dict[str, Any]]:
        result = decide(ctx, self.params)
        deployment = str(getattr(ctx, "deployment_name", "deployment"))
        if result.direction != "hold":
            logger.info("Autoscaling %s: %s", deployment, result.reason)
        metrics = self._metrics_if_in_ray()
        if metrics is not None:
            metrics.record(deployment, str(getattr(ctx, "app_name", "")), result)
        return result.num_replicas, result.state_dict()

    def _metrics_if_in_ray(self) -> PolicyMetrics | None:
        if self._metrics is None and ray.is_initialized():
            self._metrics = PolicyMetrics()
        return self._metrics
