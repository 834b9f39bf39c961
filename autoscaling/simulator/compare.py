"""Our policy against Ray Serve's default on every trace, in the simulator.

    python -m autoscaling.simulator.compare --out DIR

Each policy gets one knob grid and is judged two ways:

- **one setting for every trace**, as a user who cannot predict the traffic
  would run it: ours at ``Setup.default_setting``; Ray's default
  (``replica_queue_length_autoscaling_policy``, through Ray's own config and
  wrapper) at the cheapest single ``target_ongoing_requests`` that reaches
  our share on every trace;
- **tuned per trace**, as a user who knows the traffic would run it: ours at
  the cheapest grid setting reaching 99% within the latency target (else the
  highest share), Ray's at the cheapest ``target_ongoing_requests`` reaching
  that share (a geometric sweep refined next to the cheapest passing value).

It prints one table, writes ``comparison.json`` and one PNG per trace into
DIR. Then scale to zero: ours on the on/off trace with ``min_replicas`` 1 and
0, replica-seconds saved against the cold starts' cost (``scale_to_zero``).
Both policies get the same deployment, traces, seeds, min/max replicas,
metric intervals and delays; only the policy differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.serve.config import AutoscalingConfig

from autoscaling.simulator.controller_model import queue_latency_config, ray_default_config
from autoscaling.simulator.report import (
    OURS,
    OurSetting,
    Row,
    ScaleToZeroReport,
    SingleSetting,
    TraceReport,
    format_scale_to_zero,
    format_table,
    plot_trace,
    ray_label,
    target_of,
)
from autoscaling.simulator.service_model import ServiceModel
from autoscaling.simulator.simulation import SimConfig, SimResult, simulate
from autoscaling.simulator.traces import Trace, on_off, standard_traces

RAY_STOCK_TARGET = 2.0
GOAL_SHARE = 0.99


@dataclass(frozen=True)
class Setup:
    """Everything a comparison run depends on."""

    latency_target_ms: float = 250.0
    latency_percentile: int = 99
    target_utilization: float = 0.8  # sizes the initial replicas, for both policies
    # Spare for a jump of 3.5x the base rate while replicas take 5 s to start.
    default_setting: OurSetting = field(default_factory=lambda: OurSetting(0.8, 350.0))
    our_utilizations: tuple[float, ...] = (0.8, 0.85, 0.9)
    our_bursts_rps: tuple[float, ...] = (0.0, 350.0)
    sim: SimConfig = field(default_factory=SimConfig)
    min_replicas: int = 1
    max_replicas: int = 40
    look_back_period_s: float = 10.0
    metrics_interval_s: float = 1.0
    upscale_delay_s: float = 2.0
    downscale_delay_s: float = 60.0
    idle_to_zero_s: float = 10.0  # downscale_to_zero_delay_s of the min_replicas 0 run
    ray_targets: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    base_rps: float = 100.0
    duration_s: float = 300.0
    seed: int = 1

    @property
    def service(self) -> ServiceModel:
        return self.sim.service

    def traces(self) -> list[Trace]:
        return standard_traces(self.base_rps, self.duration_s)

    def scale_to_zero_traces(self) -> list[Trace]:
        """The standard on/off trace (3x base for half of every minute), and sporadic use: a
        third of the base rate for half of every ``duration_s / 2``, over twice as long."""
        sporadic = on_off(self.base_rps / 3.0, 2.0 * self.duration_s, self.duration_s / 2.0)
        return [next(t for t in self.traces() if t.name == "on_off"), sporadic]

    def shared_fields(self, trace: Trace) -> dict[str, Any]:
        """Config both policies get; replicas start sized for the first second's load."""
        start_rps = float(trace.rate_rps(np.zeros(1))[0])
        initial = self.service.replicas_for(start_rps, self.target_utilization)
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": max(self.min_replicas, min(self.max_replicas, initial)),
            "look_back_period_s": self.look_back_period_s,
            "metrics_interval_s": self.metrics_interval_s,
        }

    def our_settings(self) -> list[OurSetting]:
        grid = [OurSetting(u, b) for u in self.our_utilizations for b in self.our_bursts_rps]
        return grid if self.default_setting in grid else [self.default_setting, *grid]

    def policy_kwargs(self, setting: OurSetting | None = None) -> dict[str, Any]:
        """Our ``policy_kwargs``; queue target and capacity come from the service model."""
        setting = setting or self.default_setting
        target_queue = self.service.suggested_queue_target(setting.target_utilization)
        return {
            "latency_target_ms": self.latency_target_ms,
            "latency_percentile": self.latency_percentile,
            "target_queue_per_replica": round(target_queue, 2),
            "replica_capacity_rps": round(self.service.max_rate_rps(), 1),
            "target_utilization": setting.target_utilization,
            "burst_headroom_rps": setting.burst_headroom_rps,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "cooldown_s": self.look_back_period_s,
            "downscale_headroom": 0.95,
        }

    def config(self, trace: Trace, policy: OurSetting | float) -> AutoscalingConfig:
        """Our policy at ``policy``'s knobs, or Ray's default at that target."""
        fields = self.shared_fields(trace)
        if isinstance(policy, OurSetting):
            return queue_latency_config(self.policy_kwargs(policy), **fields)
        return ray_default_config(
            policy,
            upscale_delay_s=self.upscale_delay_s,
            downscale_delay_s=self.downscale_delay_s,
            **fields,
        )


def scale_to_zero(setup: Setup, trace: Trace) -> ScaleToZeroReport:
    """Our default setting on ``trace`` with min_replicas 1, then 0 (idle
    ``idle_to_zero_s`` before zero): replica-seconds saved against the cold starts' cost."""
    arrivals = trace.arrivals(setup.seed)
    fields = setup.shared_fields(trace)
    always_on = queue_latency_config(setup.policy_kwargs(), **fields)
    kwargs = {**setup.policy_kwargs(), "downscale_to_zero_delay_s": setup.idle_to_zero_s}
    to_zero = queue_latency_config(kwargs, **{**fields, "min_replicas": 0})
    return ScaleToZeroReport.of(
        f"{trace.name}: {trace.description}",
        simulate(arrivals, trace.duration_s, always_on, setup.sim),
        simulate(arrivals, trace.duration_s, to_zero, setup.sim),
        setup.latency_target_ms,
        setup.idle_to_zero_s,
        setup.sim.startup_delay_s,
    )


def _run(setup: Setup, trace_index: int, policy: OurSetting | float) -> SimResult:
    trace = setup.traces()[trace_index]
    arrivals = trace.arrivals(setup.seed)
    return simulate(arrivals, trace.duration_s, setup.config(trace, policy), setup.sim)


def _verdict(ours: Row, tuned: Row | None, best: Row) -> str:
    meets = "meets" if ours.share_within_target >= GOAL_SHARE else "misses"
    head = f"ours tuned {meets} {GOAL_SHARE:.0%} ({ours.share_within_target:.2%})"
    if tuned is None:
        return (
            f"{head}; no Ray setting reaches that share (best {best.share_within_target:.2%} "
            f"at {best.replica_seconds:.0f} replica-s vs ours {ours.replica_seconds:.0f})"
        )
    saving = 1.0 - ours.replica_seconds / tuned.replica_seconds
    if abs(saving) < 0.0005:
        cost = "the same replica-seconds as"
    else:
        cost = f"{abs(saving):.1%} {'fewer' if saving > 0 else 'more'} replica-seconds than"
    return f"{head}; {cost} {tuned.policy} ({tuned.share_within_target:.2%})"


def tuned_setting(results: dict[OurSetting, SimResult], target_s: float) -> OurSetting:
    """The cheapest setting that reaches GOAL_SHARE, else the one with the highest share."""
    passing = [s for s, r in results.items() if r.share_within(target_s) >= GOAL_SHARE]
    if passing:
        return min(passing, key=lambda s: results[s].replica_seconds)
    return max(
        results, key=lambda s: (results[s].share_within(target_s), -results[s].replica_seconds)
    )


def _refinements(results: dict[float, SimResult], goal: float, setup: Setup) -> list[float]:
    """Geometric midpoints next to the cheapest setting that reaches ``goal``."""
    target_s = setup.latency_target_ms / 1e3
    passing = [t for t, r in results.items() if r.share_within(target_s) >= goal]
    if not passing:
        return []
    cheapest = min(passing, key=lambda t: results[t].replica_seconds)
    grid = sorted(results)
    index = grid.index(cheapest)
    neighbours = grid[max(0, index - 1) : index + 2]
    return [
        round(math.sqrt(cheapest * n), 3)
        for n in neighbours
        if n != cheapest and round(math.sqrt(cheapest * n), 3) not in results
    ]


def single_setting(
    setup: Setup, reports: Sequence[TraceReport], grid: Sequence[dict[float, Row]]
) -> SingleSetting:
    """The cheapest grid value of Ray's knob that reaches our one setting's share everywhere."""
    ours_total = sum(r.ours.replica_seconds for r in reports)
    best: tuple[float, float] | None = None
    for target in setup.ray_targets:
        rows = [per_trace[target] for per_trace in grid]
        if all(
            row.share_within_target >= report.ours.share_within_target
            for row, report in zip(rows, reports, strict=True)
        ):
            total = sum(row.replica_seconds for row in rows)
            if best is None or total < best[1]:
                best = (target, total)
    if best is None:
        return SingleSetting(setup.default_setting, ours_total, None, math.nan)
    per_trace = tuple(
        (report.trace, report.ours.replica_seconds, per_trace[best[0]].replica_seconds)
        for report, per_trace in zip(reports, grid, strict=True)
    )
    return SingleSetting(setup.default_setting, ours_total, best[0], best[1], per_trace)


def compare(setup: Setup, out_dir: Path, workers: int) -> tuple[list[TraceReport], SingleSetting]:
    traces = setup.traces()
    target_ms = setup.latency_target_ms
    target_s = target_ms / 1e3
    settings = setup.our_settings()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        our_jobs = {
            (i, s): pool.submit(_run, setup, i, s) for i in range(len(traces)) for s in settings
        }
        ray_jobs = {
            (i, t): pool.submit(_run, setup, i, t)
            for i in range(len(traces))
            for t in setup.ray_targets
        }
        ours: dict[int, dict[OurSetting, SimResult]] = {i: {} for i in range(len(traces))}
        for (i, s), job in our_jobs.items():
            ours[i][s] = job.result()
        ray: dict[int, dict[float, SimResult]] = {i: {} for i in range(len(traces))}
        for (i, t), job in ray_jobs.items():
            ray[i][t] = job.result()
        tuned = {i: tuned_setting(ours[i], target_s) for i in ours}
        goals = {i: ours[i][tuned[i]].share_within(target_s) for i in ours}
        refine_jobs = {
            (i, t): pool.submit(_run, setup, i, t)
            for i in range(len(traces))
            for t in _refinements(ray[i], goals[i], setup)
        }
        for (i, t), job in refine_jobs.items():
            ray[i][t] = job.result()

    reports = []
    grid: list[dict[float, Row]] = []
    default = setup.default_setting
    for i, trace in enumerate(traces):
        rows = {t: Row.of(ray_label(t), r, target_ms) for t, r in ray[i].items()}
        grid.append(rows)
        ours_row = Row.of(default.label, ours[i][default], target_ms)
        ours_tuned = Row.of(tuned[i].label, ours[i][tuned[i]], target_ms)
        passing = [r for r in rows.values() if r.share_within_target >= goals[i]]
        ray_tuned = min(passing, key=lambda r: r.replica_seconds) if passing else None
        best = max(rows.values(), key=lambda r: (r.share_within_target, -r.replica_seconds))
        reports.append(
            TraceReport(
                trace=trace.name,
                description=trace.description,
                requests=ours[i][default].requests,
                ours=ours_row,
                ours_tuned=ours_tuned,
                ray_stock=rows[RAY_STOCK_TARGET],
                ray_tuned=ray_tuned,
                ray_best=best,
                verdict=_verdict(ours_tuned, ray_tuned, best),
            )
        )
        shown = {
            f"{OURS} (one setting)": ours[i][default],
            ray_label(RAY_STOCK_TARGET): ray[i][RAY_STOCK_TARGET],
        }
        if tuned[i] != default:
            shown[f"{OURS} tuned"] = ours[i][tuned[i]]
        tuned_target = target_of(ray_tuned) if ray_tuned else None
        if tuned_target is not None and tuned_target != RAY_STOCK_TARGET:
            shown[ray_label(tuned_target) + " tuned"] = ray[i][tuned_target]
        plot_trace(out_dir / f"{trace.name}.png", trace.description, shown, target_ms)
    return reports, single_setting(setup, reports, grid)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for JSON + PNGs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=Setup.seed, help="arrival-time seed")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Our policy logs every decision to Serve's logger; thousands here.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    setup = Setup(seed=args.seed)
    reports, single = compare(setup, args.out, args.workers)
    zero = [scale_to_zero(setup, trace) for trace in setup.scale_to_zero_traces()]
    table = format_table(reports, single, setup.latency_target_ms)
    for report in zero:
        table += "\n\n" + format_scale_to_zero(report, setup.latency_target_ms)
    print(table)
    payload = {
        "setup": {
            **asdict(setup),
            "policy_kwargs": setup.policy_kwargs(),
            "max_rate_rps_per_replica": setup.service.max_rate_rps(),
        },
        "traces": [asdict(report) for report in reports],
        "single_setting": asdict(single),
        "scale_to_zero": [asdict(report) for report in zero],
    }
    (args.out / "comparison.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "comparison.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
