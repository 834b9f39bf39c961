"""The queue-and-latency policy as a pure function: table tests on a fake context and clock."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from autoscaling.decision import PolicyState
from autoscaling.params import PolicyParams
from autoscaling.policy import QueueLatencyPolicy, decide
from tests.support.policy_context import (
    NOW,
    TARGET_MS,
    FakeContext,
    Replica,
    params,
    replicas,
)

# -- scale up ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "p95_ms", "expected", "signal"),
    [
        (8.0, 50.0, 2, None),  # on target: hold
        (20.0, 50.0, 5, "queue"),  # queue alone: 20 / 4
        (4.0, 320.0, 4, "latency"),  # latency alone: 2 * 320 / (0.8 * 200)
        (40.0, 320.0, 10, "queue"),  # both: the larger need wins
        (4.0, 640.0, 8, "latency"),
    ],
)
def test_scales_up_when_either_signal_asks_in_proportion(
    queue: float, p95_ms: float, expected: int, signal: str | None
) -> None:
    ctx = FakeContext(total_num_requests=queue, replicas=replicas(2, p95_ms=p95_ms))
    result = decide(ctx, params())
    assert result.num_replicas == expected
    if signal is not None:
        assert result.direction == "up"
        assert f"{signal} wants {expected}" in result.reason


def test_latency_just_under_its_threshold_does_not_scale_up() -> None:
    ctx = FakeContext(total_num_requests=4.0, replicas=replicas(2, p95_ms=0.8 * TARGET_MS))
    assert decide(ctx, params()).num_replicas == 2


def test_scale_up_waits_for_its_delay_on_the_context_clock() -> None:
    p = params(upscale_delay_s=5.0)
    ctx = FakeContext(total_num_requests=20.0)
    first = decide(ctx, p)
    assert (first.num_replicas, first.state.up_since_s) == (2, NOW)
    later = replace(ctx, current_time=NOW + 4.9, policy_state=first.state_dict())
    assert decide(later, p).num_replicas == 2
    due = replace(ctx, current_time=NOW + 5.0, policy_state=first.state_dict())
    assert decide(due, p).num_replicas == 5


def test_a_need_that_goes_away_restarts_the_upscale_delay() -> None:
    p = params(upscale_delay_s=5.0)
    first = decide(FakeContext(total_num_requests=20.0), p)
    calm = decide(
        FakeContext(total_num_requests=8.0, current_time=NOW + 1, policy_state=first.state_dict()),
        p,
    )
    assert calm.state.up_since_s is None
    again = FakeContext(
        total_num_requests=20.0, current_time=NOW + 5, policy_state=calm.state_dict()
    )
    assert decide(again, p).num_replicas == 2


def test_scale_up_is_capped_by_step_and_max() -> None:
    ctx = FakeContext(total_num_requests=400.0)
    assert decide(ctx, params(max_scale_up_step=3)).num_replicas == 5
    assert decide(replace(ctx, capacity_adjusted_max_replicas=7), params()).num_replicas == 7


def test_at_max_replicas_a_need_holds() -> None:
    ctx = FakeContext(total_num_requests=400.0, capacity_adjusted_max_replicas=2)
    result = decide(ctx, params())
    assert (result.num_replicas, result.direction) == (2, "hold")
    assert "max_replicas" in result.reason


def test_no_scale_up_while_added_replicas_are_starting() -> None:
    ctx = FakeContext(current_num_replicas=2, target_num_replicas=5, total_num_requests=80.0)
    result = decide(ctx, params())
    assert result.num_replicas == 5
    assert "starting" in result.reason


def test_replicas_that_never_start_do_not_pin_the_count_when_load_goes() -> None:
    ctx = FakeContext(
        current_num_replicas=3,
        target_num_replicas=8,
        total_num_requests=0.0,
        replicas=replicas(3, samples=0.0),
    )
    result = decide(ctx, params(max_scale_down_fraction=1.0))
    assert (result.num_replicas, result.direction) == (1, "down")


def test_cooldown_after_a_scale_up_takes_effect() -> None:
    p = params(cooldown_s=10.0)
    up = decide(FakeContext(total_num_requests=20.0), p)
    assert up.num_replicas == 5
    assert up.state.pending_up
    running = FakeContext(
        current_num_replicas=5,
        target_num_replicas=5,
        total_num_requests=40.0,
        current_time=NOW + 6,
        policy_state=up.state_dict(),
    )
    settled = decide(running, p)
    assert settled.num_replicas == 5
    assert settled.state.settled_at_s == NOW + 6
    after = replace(running, current_time=NOW + 16, policy_state=settled.state_dict())
    assert decide(after, p).num_replicas == 10


# -- scale down -------------------------------------------------------------


def idle_enough(**overrides: Any) -> FakeContext:
    base = FakeContext(
        current_num_replicas=8,
        target_num_replicas=8,
        total_num_requests=4.0,
        replicas=replicas(8, p95_ms=40.0),
    )
    return replace(base, **overrides)


def test_scales_down_when_queue_and_latency_agree_by_a_bounded_step() -> None:
    result = decide(idle_enough(), params())
    assert result.direction == "down"
    assert result.num_replicas == 4  # floor is 2, but at most half go at once
    assert decide(idle_enough(), params(max_scale_down_fraction=1.0)).num_replicas == 2


def test_latency_vetoes_a_scale_down_the_queue_allows() -> None:
    ctx = idle_enough(replicas=replicas(8, p95_ms=0.6 * TARGET_MS))
    assert decide(ctx, params()).num_replicas == 8


def test_queue_vetoes_a_scale_down_latency_allows() -> None:
    ctx = idle_enough(total_num_requests=28.0)  # 7 replicas' worth, with headroom 8
    assert decide(ctx, params()).num_replicas == 8


def test_scale_down_waits_for_its_delay() -> None:
    p = params(downscale_delay_s=30.0)
    first = decide(idle_enough(), p)
    assert (first.num_replicas, first.state.down_since_s) == (8, NOW)
    early = idle_enough(current_time=NOW + 29, policy_state=first.state_dict())
    assert decide(early, p).num_replicas == 8
    due = idle_enough(current_time=NOW + 30, policy_state=first.state_dict())
    assert decide(due, p).num_replicas == 4


def test_a_descent_continues_one_step_per_cooldown_until_a_signal_objects() -> None:
    p = params(downscale_delay_s=60.0, cooldown_s=10.0)
    first = decide(idle_enough(), p)
    step = decide(idle_enough(current_time=NOW + 60, policy_state=first.state_dict()), p)
    assert (step.num_replicas, step.state.descending) == (4, True)
    at_four = idle_enough(current_num_replicas=4, target_num_replicas=4)
    cooling = replace(at_four, current_time=NOW + 65, policy_state=step.state_dict())
    assert "cooling down" in decide(cooling, p).reason
    next_step = decide(replace(cooling, current_time=NOW + 70), p)
    assert next_step.num_replicas == 2  # no second 60 s delay
    busy = replace(at_four, total_num_requests=16.0, current_time=NOW + 80)
    ended = decide(replace(busy, policy_state=next_step.state_dict()), p)
    assert not ended.state.descending
    quiet_again = replace(at_four, current_time=NOW + 81, policy_state=ended.state_dict())
    assert "waiting 0.0/60s" in decide(quiet_again, p).reason  # a new descent: full delay


def test_idle_deployment_scales_down_to_min_and_to_zero() -> None:
    silent = idle_enough(
        total_num_requests=0.0, replicas=replicas(8, samples=0.0, p95_ms=0.0, throughput_rps=0.0)
    )
    assert decide(silent, params(max_scale_down_fraction=1.0)).num_replicas == 1
    to_zero = replace(silent, capacity_adjusted_min_replicas=0)
    assert decide(to_zero, params(max_scale_down_fraction=1.0)).num_replicas == 0


# -- scale to zero (min_replicas 0) -----------------------------------------


def one_idle_replica(**overrides: Any) -> FakeContext:
    """One running replica, nothing ongoing or queued, nothing completed in its window."""
    base = FakeContext(
        current_num_replicas=1,
        target_num_replicas=1,
        total_num_requests=0.0,
        replicas=replicas(1, samples=0.0, p95_ms=0.0, throughput_rps=0.0),
        capacity_adjusted_min_replicas=0,
    )
    return replace(base, **overrides)


def run_ticks(p: PolicyParams, ticks: list[tuple[float, float, int]]) -> list[tuple[int, str]]:
    """Replays (seconds after NOW, queue, running replicas) ticks, carrying target and state
    the way Serve does; returns each tick's (count, phase)."""
    state: dict[str, Any] = {}
    target = ticks[0][2]
    seen: list[tuple[int, str]] = []
    for at_s, queue, running in ticks:
        ctx = one_idle_replica(
            current_num_replicas=running,
            target_num_replicas=target,
            total_num_requests=queue,
            replicas=replicas(running, samples=0.0, p95_ms=0.0, throughput_rps=0.0),
            current_time=NOW + at_s,
            policy_state=state,
        )
        result = decide(ctx, p)
        target, state = result.num_replicas, result.state_dict()
        seen.append((result.num_replicas, result.phase))
    return seen


# A long upscale delay: leaving zero must not wait for it.
ZERO_AFTER_30S = params(downscale_delay_s=5.0, downscale_to_zero_delay_s=30.0, upscale_delay_s=60)


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        # idle from 0 s: held until 30 s of idleness, then zero
        (
            [(0, 0, 1), (29.9, 0, 1), (30, 0, 1)],
            [(1, "idle_delay"), (1, "idle_delay"), (0, "scaling_to_zero")],
        ),
        # a request at 20 s restarts the idle clock: zero only 30 s after it has gone
        (
            [(0, 0, 1), (20, 1, 1), (21, 0, 1), (50, 0, 1), (51, 0, 1)],
            [
                (1, "idle_delay"),
                (1, "steady"),
                (1, "idle_delay"),
                (1, "idle_delay"),
                (0, "scaling_to_zero"),
            ],
        ),
        # at zero: nothing queued holds zero; one queued request asks for 1 at once
        (
            [(0, 0, 1), (30, 0, 1), (31, 0, 0), (90, 0, 0), (90.5, 1, 0)],
            [
                (1, "idle_delay"),
                (0, "scaling_to_zero"),
                (0, "steady"),
                (0, "steady"),
                (1, "scaling_up"),
            ],
        ),
        # no flapping: after a cold start the replica stays its full idle delay, not one tick
        (
            [(0, 1, 0), (1, 1, 0), (5, 1, 1), (6, 0, 1), (35.9, 0, 1), (36, 0, 1)],
            [
                (1, "scaling_up"),
                (1, "starting"),
                (1, "steady"),
                (1, "idle_delay"),
                (1, "idle_delay"),
                (0, "scaling_to_zero"),
            ],
        ),
    ],
)
def test_scale_to_zero_after_the_idle_delay_and_back_at_once(
    ticks: list[tuple[float, float, int]], expected: list[tuple[int, str]]
) -> None:
    assert run_ticks(ZERO_AFTER_30S, ticks) == expected


def test_a_cold_start_cools_down_before_the_start_up_backlog_can_add_replicas() -> None:
    # Serve starts the first replica without asking the policy (its wrapper's cold-start path);
    # the look-back mean then still holds what queued meanwhile, drained in moments.
    p = params(cooldown_s=10.0)
    at_zero = decide(one_idle_replica(current_num_replicas=0, target_num_replicas=0), p)
    assert at_zero.state.at_zero
    backlog = one_idle_replica(total_num_requests=40.0, policy_state=at_zero.state_dict())
    first = decide(replace(backlog, current_time=NOW + 5), p)
    assert (first.num_replicas, first.phase) == (1, "cooldown")
    assert not first.state.at_zero
    still = decide(replace(backlog, current_time=NOW + 14.9, policy_state=first.state_dict()), p)
    assert still.num_replicas == 1
    due = decide(replace(backlog, current_time=NOW + 15, policy_state=still.state_dict()), p)
    assert due.num_replicas == 10  # the load is still there after the cooldown: 40 / 4


def test_the_idle_delay_defaults_to_the_downscale_delay() -> None:
    p = params(downscale_delay_s=12.0)
    first = decide(one_idle_replica(), p)
    early = one_idle_replica(current_time=NOW + 11.9, policy_state=first.state_dict())
    assert decide(early, p).num_replicas == 1
    due = one_idle_replica(current_time=NOW + 12, policy_state=first.state_dict())
    assert decide(due, p).num_replicas == 0


def test_recent_completions_are_not_idle() -> None:
    # The look-back mean can read 0 between short requests; the replicas' windows still count them.
    busy = one_idle_replica(replicas=replicas(1, samples=5.0, p95_ms=20.0, throughput_rps=0.5))
    result = decide(busy, ZERO_AFTER_30S)
    later = replace(busy, current_time=NOW + 60, policy_state=result.state_dict())
    assert (result.state.idle_since_s, decide(later, ZERO_AFTER_30S).num_replicas) == (None, 1)


def test_scale_downs_that_are_not_idle_stop_at_one_replica() -> None:
    quiet = idle_enough(
        total_num_requests=0.0,
        replicas=replicas(8, samples=0.0, p95_ms=0.0, throughput_rps=0.1),
        capacity_adjusted_min_replicas=0,
    )
    result = decide(quiet, params(max_scale_down_fraction=1.0))
    assert (result.num_replicas, result.phase) == (1, "scaling_down")


def test_min_replicas_above_zero_never_reaches_zero_however_long_idle() -> None:
    first = decide(one_idle_replica(capacity_adjusted_min_replicas=1), ZERO_AFTER_30S)
    much_later = one_idle_replica(
        capacity_adjusted_min_replicas=1, current_time=NOW + 3600, policy_state=first.state_dict()
    )
    assert decide(much_later, ZERO_AFTER_30S).num_replicas == 1


# -- cold start and bounds --------------------------------------------------


@pytest.mark.parametrize(
    ("queue", "expected"),
    [(0.0, 0), (1.0, 1), (9.0, 3), (400.0, 20)],
)
def test_cold_start_from_zero_replicas(queue: float, expected: int) -> None:
    ctx = FakeContext(
        current_num_replicas=0,
        target_num_replicas=0,
        total_num_requests=queue,
        replicas=[],
        capacity_adjusted_min_replicas=0,
        policy_state={"qlp_down_since_s": NOW - 1},  # cold start ignores old timers
    )
    assert decide(ctx, params(upscale_delay_s=60.0)).num_replicas == expected


def test_cold_start_does_not_repeat_while_replicas_start() -> None:
    ctx = FakeContext(
        current_num_replicas=0, target_num_replicas=3, total_num_requests=9.0, replicas=[]
    )
    result = decide(ctx, params())
    assert (result.num_replicas, result.direction) == (3, "hold")


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(3, 20, 3), (1, 1, 1), (4, 6, 4)],
)
def test_bounds_move_the_count_even_without_a_signal(lo: int, hi: int, expected: int) -> None:
    ctx = FakeContext(capacity_adjusted_min_replicas=lo, capacity_adjusted_max_replicas=hi)
    result = decide(ctx, params())
    assert result.num_replicas == expected
    if expected != 2:
        assert "bounds moved" in result.reason


# -- missing, stale and broken metrics --------------------------------------


def test_without_replica_metrics_the_queue_still_decides() -> None:
    up = FakeContext(total_num_requests=20.0, replicas=None)
    assert decide(up, params()).num_replicas == 5
    hold = FakeContext(total_num_requests=8.0, replicas=None)
    assert decide(hold, params()).num_replicas == 2


@pytest.mark.parametrize(
    "slow",
    [
        Replica(p95_ms=5_000.0, age_s=31.0),  # stale report
        Replica(p95_ms=5_000.0, samples=3.0),  # replica that just started
        Replica(p95_ms=math.nan),  # NaN latency
        Replica(p95_ms=math.inf),
        Replica(p95_ms=-1.0),
        Replica(p95_ms=5_000.0, samples=math.nan),
    ],
)
def test_unusable_latency_never_causes_a_scale_up(slow: Replica) -> None:
    ctx = FakeContext(total_num_requests=4.0, replicas=[slow, slow])
    result = decide(ctx, params())
    assert result.num_replicas == 2
    assert result.readings is not None
    assert result.readings.latency_ms is None


def test_one_fresh_replica_speaks_for_latency_when_the_other_is_stale() -> None:
    ctx = FakeContext(
        total_num_requests=4.0,
        replicas=[Replica(p95_ms=320.0), Replica(p95_ms=9_999.0, age_s=60.0)],
    )
    result = decide(ctx, params())
    assert result.readings is not None
    assert result.readings.latency_replicas == 1
    assert result.num_replicas == 4


@pytest.mark.parametrize("queue", [math.nan, math.inf, -3.0])
def test_broken_queue_neither_scales_up_nor_down_on_its_own(queue: float) -> None:
    assert decide(FakeContext(total_num_requests=queue), params()).num_replicas == 2
    assert decide(idle_enough(total_num_requests=queue), params()).num_replicas == 8


def test_broken_queue_leaves_latency_in_charge() -> None:
    ctx = FakeContext(total_num_requests=math.nan, replicas=replicas(2, p95_ms=320.0))
    assert decide(ctx, params()).num_replicas == 4


def test_no_clock_means_hold() -> None:
    ctx = FakeContext(total_num_requests=400.0, current_time=None)
    result = decide(ctx, params())
    assert (result.num_replicas, result.direction) == (2, "hold")


def test_latency_is_weighted_by_each_replicas_samples() -> None:
    ctx = FakeContext(
        replicas=[Replica(p95_ms=100.0, samples=300.0), Replica(p95_ms=300.0, samples=100.0)]
    )
    result = decide(ctx, params())
    assert result.readings is not None
    assert result.readings.latency_ms == pytest.approx(150.0)
    assert result.readings.queue_wait_ms == pytest.approx(75.0)
    assert result.readings.throughput_rps == pytest.approx(20.0)


# -- throughput with a known replica capacity --------------------------------


def test_throughput_asks_for_capacity_at_target_utilization() -> None:
    ctx = FakeContext(total_num_requests=4.0, replicas=replicas(2, throughput_rps=100.0))
    p = params(replica_capacity_rps=50.0, target_utilization=0.8)
    result = decide(ctx, p)
    assert result.num_replicas == 5  # 200 rps / 40 rps
    assert "throughput wants 5" in result.reason


def test_throughput_sets_the_floor_of_a_scale_down() -> None:
    ctx = idle_enough(replicas=replicas(8, throughput_rps=20.0))  # 160 rps in all
    p = params(replica_capacity_rps=50.0, max_scale_down_fraction=1.0)
    # 160 / (50 * 0.7 * 0.8) = 5.7 -> 6, though the queue alone would allow 2
    assert decide(ctx, p).num_replicas == 6


def test_burst_headroom_keeps_spare_capacity_at_full_replica_rate() -> None:
    ctx = FakeContext(total_num_requests=4.0, replicas=replicas(2, throughput_rps=25.0))
    p = params(replica_capacity_rps=50.0, target_utilization=0.8, burst_headroom_rps=120.0)
    result = decide(ctx, p)
    # (50 rps measured + 120 spare) / 50 rps per replica = 3.4 -> 4; throughput alone wants 2
    assert result.num_replicas == 4
    assert "burst wants 4" in result.reason


def test_burst_headroom_holds_replicas_a_quiet_period_would_remove() -> None:
    quiet = replicas(6, p95_ms=10.0, throughput_rps=0.0)
    p = params(replica_capacity_rps=50.0, max_scale_down_fraction=1.0)
    assert decide(idle_enough(replicas=quiet, total_num_requests=0.0), p).num_replicas == 1
    spare = p.model_copy(update={"burst_headroom_rps": 120.0})
    # 120 / (50 * 0.8 headroom) = 3 replicas stay for a burst
    assert decide(idle_enough(replicas=quiet, total_num_requests=0.0), spare).num_replicas == 3


def test_burst_headroom_without_replica_metrics_asks_for_nothing() -> None:
    p = params(replica_capacity_rps=50.0, burst_headroom_rps=500.0)
    result = decide(FakeContext(total_num_requests=8.0, replicas=None), p)
    assert result.num_replicas == 2
    assert "within targets" in result.reason


# -- state, parameters, logging ---------------------------------------------


def test_state_survives_a_round_trip_and_ignores_foreign_keys() -> None:
    state = PolicyState(up_since_s=1.0, down_since_s=None, pending_up=True, settled_at_s=3.0)
    mixed = {**state.to_dict(), "__decision_counters": 4, "__decision_timestamp": 9.0}
    assert PolicyState.from_mapping(mixed) == state
    junk = {"qlp_up_since_s": "soon", "qlp_settled_at_s": math.nan, "qlp_pending_up": "yes"}
    assert PolicyState.from_mapping(junk) == PolicyState()


def test_returned_state_shows_the_decision_and_its_readings() -> None:
    _, state = QueueLatencyPolicy(**params().model_dump())(FakeContext(total_num_requests=20.0))
    assert state["qlp_decision"] == "up"
    assert state["qlp_queue"] == 20.0
    assert state["qlp_latency_ms"] == pytest.approx(50.0)
    assert "queue wants 5" in state["qlp_reason"]


def test_each_scaling_decision_is_logged_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = QueueLatencyPolicy(**params().model_dump())
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        policy(FakeContext(total_num_requests=8.0))  # a hold is not a decision to log
        assert not caplog.records
        num, _ = policy(FakeContext(total_num_requests=4.0, replicas=replicas(2, p95_ms=320.0)))
    assert num == 4
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("Autoscaling model: scale up 2->4: latency wants 4")
    assert "p95 320.0ms (target 200ms" in line
    assert "queue 4.0" in line


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_queue_per_replica": 4}, r"latency_target_ms is required.*serve_app\.objective"),
        ({"latency_target_ms": 0, "target_queue_per_replica": 4}, "greater than 0"),
        ({"latency_target_ms": 100, "target_queue_per_replica": 4, "latency_percentile": 97}, "99"),
        (
            {
                "latency_target_ms": 100,
                "target_queue_per_replica": 4,
                "latency_downscale_ratio": 0.9,
            },
            "must be below latency_upscale_ratio",
        ),
        ({"latency_target_ms": 100, "target_queue_per_replica": 4, "typo_s": 1}, "typo_s"),
        (
            {
                "latency_target_ms": 100,
                "target_queue_per_replica": 4,
                "downscale_to_zero_delay_s": -1,
            },
            "downscale_to_zero_delay_s",
        ),
        (
            {"latency_target_ms": 100, "target_queue_per_replica": 4, "burst_headroom_rps": 50},
            "needs replica_capacity_rps",
        ),
    ],
)
def test_parameters_fail_with_an_actionable_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QueueLatencyPolicy(**kwargs)


# -- properties ---------------------------------------------------------------

finite_or_not = st.one_of(
    st.floats(min_value=-10, max_value=10_000), st.sampled_from([math.nan, math.inf])
)


@settings(max_examples=300, deadline=None)
@given(
    current=st.integers(0, 30),
    target=st.integers(0, 30),
    lo=st.integers(0, 5),
    span=st.integers(0, 30),
    queue=finite_or_not,
    p95=finite_or_not,
    samples=finite_or_not,
    age=st.floats(0, 100),
    state_time=st.one_of(st.none(), st.floats(NOW - 100, NOW)),
)
def test_any_context_gives_a_count_within_bounds(
    current: int,
    target: int,
    lo: int,
    span: int,
    queue: float,
    p95: float,
    samples: float,
    age: float,
    state_time: float | None,
) -> None:
    ctx = FakeContext(
        current_num_replicas=current,
        target_num_replicas=target,
        total_num_requests=queue,
        replicas=replicas(current, p95_ms=p95, samples=samples, age_s=age),
        capacity_adjusted_min_replicas=lo,
        capacity_adjusted_max_replicas=lo + span,
        policy_state={"qlp_up_since_s": state_time, "qlp_down_since_s": state_time},
    )
    result = decide(ctx, params(upscale_delay_s=5.0, downscale_delay_s=5.0))
    assert lo <= result.num_replicas <= max(lo, lo + span)
    if result.num_replicas > max(target, lo):
        assert any(s in result.reason for s in ("queue wants", "latency wants", "cold start"))
