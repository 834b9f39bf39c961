"""The trace simulator: traces, service model, Ray's wrapper on a simulated clock, comparison.

No Ray instance: the simulator imports Ray's policy code, config and context classes only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray.serve.config import AutoscalingContext

from autoscaling.simulator import traces
from autoscaling.simulator.compare import GOAL_SHARE, Setup, compare, scale_to_zero
from autoscaling.simulator.controller_model import (
    DeploymentID,
    apply_bounds,
    autoscaling_config,
    queue_latency_config,
    ray_default_config,
    resolve_policy,
)
from autoscaling.simulator.report import OurSetting, format_scale_to_zero, format_table
from autoscaling.simulator.service_model import ServiceModel
from autoscaling.simulator.simulation import SimConfig, simulate

FAST = ServiceModel(a_s=0.01, b_s=0.002, max_batch_size=8, batch_wait_timeout_s=0.005)


def fixed(replicas: int, **fields: Any) -> Any:
    """Ray's default policy pinned to ``replicas`` by min == max."""
    return ray_default_config(2.0, min_replicas=replicas, max_replicas=replicas, **fields)


def ours(**fields: Any) -> Any:
    kwargs = {
        "latency_target_ms": 200,
        "latency_percentile": 99,
        "target_queue_per_replica": FAST.suggested_queue_target(0.8),
        "replica_capacity_rps": FAST.max_rate_rps(),
        "target_utilization": 0.8,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 10.0,
        "cooldown_s": 5.0,
    }
    base = {"min_replicas": 1, "max_replicas": 10, "look_back_period_s": 5.0}
    return queue_latency_config(kwargs, **{**base, "metrics_interval_s": 0.5, **fields})


# -- traces -------------------------------------------------------------------


@pytest.mark.parametrize("trace", traces.standard_traces(base_rps=50.0, duration_s=120.0))
def test_trace_arrivals_match_their_rate(trace: traces.Trace) -> None:
    arrivals = trace.arrivals(seed=3)
    expected = trace.expected_requests()
    assert np.all(np.diff(arrivals) >= 0)
    assert arrivals.min() >= 0
    assert arrivals.max() < trace.duration_s
    assert abs(arrivals.size - expected) < 5 * math.sqrt(expected)
    assert np.array_equal(arrivals, trace.arrivals(seed=3))


def test_trace_shapes() -> None:
    grid = np.array([0.0, 50.0, 110.0, 200.0])
    assert traces.spike(10.0, 300.0).rate_rps(grid).tolist() == [10.0, 10.0, 50.0, 10.0]
    on_off = traces.on_off(30.0, 120.0, period_s=60.0).rate_rps(np.array([10.0, 40.0]))
    assert on_off.tolist() == [30.0, 0.0]
    ramp = traces.ramp(10.0, 100.0, factor=4.0).rate_rps(np.array([0.0, 50.0, 100.0]))
    assert ramp.tolist() == pytest.approx([10.0, 40.0, 10.0])
    diurnal = traces.diurnal(10.0, 100.0, factor=4.0).rate_rps(np.array([0.0, 50.0]))
    assert diurnal.tolist() == pytest.approx([10.0, 40.0])


# -- service model ------------------------------------------------------------


def test_service_model_capacity_is_where_the_accelerator_is_always_busy() -> None:
    model = ServiceModel(a_s=0.02, b_s=0.005, max_batch_size=8, batch_wait_timeout_s=0.01)
    capacity = model.max_rate_rps()
    assert model.utilization_at(capacity) == pytest.approx(1.0, abs=1e-6)
    assert model.batch_size_at(capacity) == pytest.approx(1 + capacity * 0.01)
    assert model.replicas_for(100.0) == 2
    assert model.replicas_for(0.0) == 0
    assert math.isinf(model.in_flight_at(capacity * 1.01))


def test_bigger_batches_mean_more_capacity() -> None:
    small = ServiceModel(a_s=0.05, b_s=0.001, max_batch_size=1, batch_wait_timeout_s=0.05)
    large = ServiceModel(a_s=0.05, b_s=0.001, max_batch_size=32, batch_wait_timeout_s=0.05)
    assert large.max_rate_rps() > 5 * small.max_rate_rps()


def test_service_model_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="b_s > 0"):
        ServiceModel(a_s=0.01, b_s=0.0)


# -- Ray's wrapper on the simulated clock --------------------------------------


def context(config: Any, now: float, total: float, state: dict[str, Any]) -> AutoscalingContext:
    return AutoscalingContext(
        deployment_id=DeploymentID(name="model", app_name="sim"),
        deployment_name="model",
        app_name="sim",
        current_num_replicas=2,
        target_num_replicas=2,
        running_replicas=[],
        total_num_requests=total,
        total_queued_requests=0.0,
        aggregated_metrics=None,
        raw_metrics=None,
        capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas,
        policy_state=state,
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=config,
    )


def test_ray_default_policy_runs_with_its_delay_on_the_simulated_clock() -> None:
    config = ray_default_config(2.0, max_replicas=20, upscale_delay_s=5.0)
    policy = resolve_policy(config)
    decision, state = policy(context(config, 100.0, 20.0, {}))
    assert decision == 2  # wants 10, waiting on Ray's own delay
    decision, state = policy(context(config, 105.0, 20.0, state))
    assert decision == 10


def test_our_policy_resolves_through_serves_config() -> None:
    config = ours()
    policy = resolve_policy(config)
    decision, state = policy(context(config, 100.0, 100.0, {}))
    assert decision == 2  # the policy's own upscale delay, 1 s
    assert state["qlp_up_since_s"] == 100.0
    decision, state = policy(context(config, 101.0, 100.0, state))
    assert decision == 10
    assert state["qlp_decision"] == "up"


def test_bounds_are_applied_like_the_controller() -> None:
    config = autoscaling_config(min_replicas=2, max_replicas=5)
    assert [apply_bounds(n, config) for n in (0, 3, 3.2, 9)] == [2, 3, 4, 5]


# -- the simulation -------------------------------------------------------------


def test_fixed_replicas_serve_everything_and_cost_replicas_times_duration() -> None:
    arrivals = traces.steady(40.0, 30.0).arrivals(seed=1)
    result = simulate(arrivals, 30.0, fixed(2), SimConfig(service=FAST))
    assert result.requests == arrivals.size
    assert np.all(np.isfinite(result.latency_s))
    assert result.latency_s.min() >= FAST.service_time_s(1)
    assert result.replica_seconds == pytest.approx(60.0)
    assert result.scale_events == 0
    assert set(result.target_replicas.tolist()) == {2}


def test_a_lone_request_waits_for_the_batch_timeout_then_one_pass() -> None:
    result = simulate(np.array([1.0]), 5.0, fixed(1), SimConfig(service=FAST))
    expected_s = FAST.batch_wait_timeout_s + FAST.service_time_s(1)
    assert result.latency_s.tolist() == pytest.approx([expected_s])


def test_a_full_batch_closes_without_waiting() -> None:
    burst = np.full(FAST.max_batch_size, 1.0)
    result = simulate(burst, 5.0, fixed(1), SimConfig(service=FAST))
    expected_s = FAST.service_time_s(FAST.max_batch_size)
    assert result.latency_s.tolist() == pytest.approx([expected_s] * FAST.max_batch_size)


def test_overload_scales_up_and_new_replicas_serve_only_after_start_up() -> None:
    arrivals = traces.steady(3 * FAST.max_rate_rps(), 40.0).arrivals(seed=2)
    sim = SimConfig(service=FAST, startup_delay_s=5.0)
    result = simulate(arrivals, 40.0, ours(), sim)
    assert result.scale_events >= 1
    first_up = int(np.argmax(result.target_replicas > 1))
    assert result.running_replicas[first_up] == 1
    assert result.running_replicas[first_up + 4] == 1  # still starting
    assert result.running_replicas[first_up + 6] > 1
    assert 3 <= result.target_replicas[-1] <= 10


def test_a_run_is_deterministic() -> None:
    arrivals = traces.spike(30.0, 60.0, length_s=20.0).arrivals(seed=5)
    first = simulate(arrivals, 60.0, ours(), SimConfig(service=FAST))
    second = simulate(arrivals, 60.0, ours(), SimConfig(service=FAST))
    assert np.array_equal(first.latency_s, second.latency_s)
    assert first.replica_seconds == second.replica_seconds


def test_idle_deployment_scales_to_its_minimum() -> None:
    arrivals = traces.steady(100.0, 10.0).arrivals(seed=1)
    config = ours(initial_replicas=6)
    result = simulate(arrivals, 90.0, config, SimConfig(service=FAST))
    assert result.target_replicas[0] == 6
    assert result.target_replicas[-1] == 1


def test_requests_still_queued_at_the_end_count_as_misses() -> None:
    arrivals = traces.steady(10 * FAST.max_rate_rps(), 5.0).arrivals(seed=1)
    result = simulate(arrivals, 5.0, fixed(1), SimConfig(service=FAST, drain_s=0.5))
    assert result.requests == arrivals.size
    assert np.isinf(result.latency_s).any()
    assert result.share_within(1.0) < 1.0


def test_comparison_writes_table_json_and_a_png_per_trace(tmp_path: Path) -> None:
    setup = Setup(
        sim=SimConfig(service=FAST),
        base_rps=30.0,
        duration_s=40.0,
        ray_targets=(1.0, 2.0, 4.0),
        max_replicas=10,
        default_setting=OurSetting(0.8, 20.0),
        our_utilizations=(0.8, 0.9),
        our_bursts_rps=(0.0,),
    )
    assert len(setup.our_settings()) == 3  # the default joins the grid
    reports, single = compare(setup, tmp_path, workers=2)
    assert [r.trace for r in reports] == ["steady", "ramp", "spike", "diurnal", "on_off"]
    for report in reports:
        assert (tmp_path / f"{report.trace}.png").stat().st_size > 0
        assert 0.0 <= report.ours.share_within_target <= 1.0
        assert report.ray_stock.policy.endswith("=2)")
        if report.ray_tuned is not None:
            assert report.ray_tuned.share_within_target >= report.ours_tuned.share_within_target
        # The tuned setting is the cheapest reaching the goal, or the best share there is.
        if report.ours_tuned.share_within_target < GOAL_SHARE:
            assert report.ours.share_within_target <= report.ours_tuned.share_within_target
        elif report.ours.share_within_target >= GOAL_SHARE:
            assert report.ours_tuned.replica_seconds <= report.ours.replica_seconds
    table = format_table(reports, single, setup.latency_target_ms)
    assert table.count("| steady |") >= 2
    assert "all traces" in table
    assert "burst 20 rps" in table
    if single.target_ongoing_requests is not None:
        assert [trace for trace, _, _ in single.per_trace] == [r.trace for r in reports]
        assert sum(ray for _, _, ray in single.per_trace) == pytest.approx(single.replica_seconds)
        assert "per trace, ours vs Ray: steady" in table
    json.dumps([r.verdict for r in reports])


def test_scale_to_zero_saves_replica_seconds_and_charges_cold_starts_to_first_requests() -> None:
    # on/off: 90 rps for 30 s, silent for 30 s, three times; zero after 5 s idle.
    setup = Setup(
        sim=SimConfig(service=FAST, startup_delay_s=3.0),
        base_rps=30.0,
        duration_s=180.0,
        idle_to_zero_s=5.0,
        default_setting=OurSetting(0.8, 0.0),
    )
    report = scale_to_zero(setup, next(t for t in setup.traces() if t.name == "on_off"))
    assert report.always_on.replica_seconds - report.to_zero.replica_seconds == pytest.approx(
        report.replica_seconds_saved
    )
    # Each of the two later bursts starts at zero; ~30 s silent - idle delay - look-back saved.
    assert report.cold_starts == 2
    assert report.replica_seconds_saved >= 2 * (30.0 - 5.0 - setup.look_back_period_s)
    # The first request of a burst waits for a whole cold start; later ones ride it.
    assert report.requests_at_zero > 2
    assert report.at_zero_max_ms >= 1e3 * setup.sim.startup_delay_s
    assert report.at_zero_within_target < 1.0
    assert report.to_zero.share_within_target < report.always_on.share_within_target
    table = format_scale_to_zero(report, setup.latency_target_ms)
    assert "| min_replicas 0 |" in table
    assert f"saves {report.replica_seconds_saved:.0f} replica-s" in table


def test_min_replicas_one_has_no_cold_starts() -> None:
    arrivals = traces.on_off(60.0, 120.0).arrivals(seed=1)
    result = simulate(arrivals, 120.0, ours(), SimConfig(service=FAST))
    assert (result.cold_starts, int(result.at_zero.sum())) == (0, 0)
    assert result.running_replicas.min() >= 1


def test_a_replica_removed_while_idle_holds_on_for_serves_shutdown_wait_loop() -> None:
    # Six replicas, no traffic: the policy takes them down to one; each that ran costs one
    # graceful_shutdown_wait_loop_s past its stop, as Serve's drain checks only after a loop.
    config = ours(initial_replicas=6)
    waits = {}
    for loop_s in (0.0, 2.0):
        sim = SimConfig(service=FAST, shutdown_wait_loop_s=loop_s)
        waits[loop_s] = simulate(np.array([1.0]), 90.0, config, sim)
    assert waits[0.0].target_replicas[-1] == waits[2.0].target_replicas[-1] == 1
    extra = waits[2.0].replica_seconds - waits[0.0].replica_seconds
    assert extra == pytest.approx(5 * 2.0)
