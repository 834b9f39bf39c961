"""Our policy against Ray Serve's default on every trace, in the simulator.

    python -m autoscaling.compare --out DIR

For each trace it runs our policy once, and Ray's default policy
(``replica_queue_length_autoscaling_policy``, through Ray's own config and
wrapper) at several ``target_ongoing_requests``: Ray's stock value 2 and a
geometric sweep refined around the cheapest setting that reaches our share
of requests within the latency target ("Ray tuned"). It prints one table,
writes ``comparison.json`` and one PNG per trace into DIR.

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

from autoscaling.controller_model import queue_latency_config, ray_default_config
from autoscaling.plots import plot_trace
from autoscaling.service_model import ServiceModel
from autoscaling.simulator import SimConfig, SimResult, simulate
from autoscaling.traces import Trace, standard_traces

OURS = "queue+latency"
RAY_STOCK_TARGET = 2.0


@dataclass(frozen=True)
class Setup:
    """Everything a comparison run depends on."""

    latency_target_ms: float = 250.0
    latency_percentile: int = 99
    target_utilization: float = 0.8
    sim: SimConfig = field(default_factory=SimConfig)
    min_replicas: int = 1
    max_replicas: int = 40
    look_back_period_s: float = 10.0
    metrics_interval_s: float = 1.0
    upscale_delay_s: float = 2.0
    downscale_delay_s: float = 60.0
    ray_targets: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    base_rps: float = 100.0
    duration_s: float = 300.0
    seed: int = 1

    @property
    def service(self) -> ServiceModel:
        return self.sim.service

    def traces(self) -> list[Trace]:
        return standard_traces(self.base_rps, self.duration_s)

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

    def policy_kwargs(self) -> dict[str, Any]:
        """Our ``policy_kwargs``; queue target and capacity come from the service model."""
        target_queue = self.service.suggested_queue_target(self.target_utilization)
        return {
            "latency_target_ms": self.latency_target_ms,
            "latency_percentile": self.latency_percentile,
            "target_queue_per_replica": round(target_queue, 2),
            "replica_capacity_rps": round(self.service.max_rate_rps(), 1),
            "target_utilization": self.target_utilization,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "cooldown_s": self.look_back_period_s,
            "downscale_headroom": 0.85,
        }

    def config(self, trace: Trace, ray_target: float | None) -> AutoscalingConfig:
        fields = self.shared_fields(trace)
        if ray_target is None:
            return queue_latency_config(self.policy_kwargs(), **fields)
        return ray_default_config(
            ray_target,
            upscale_delay_s=self.upscale_delay_s,
            downscale_delay_s=self.downscale_delay_s,
            **fields,
        )


@dataclass(frozen=True)
class Row:
    """One policy's outcome on one trace."""

    policy: str
    share_within_target: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    replica_seconds: float
    scale_events: int

    @classmethod
    def of(cls, policy: str, result: SimResult, latency_target_ms: float) -> Row:
        return cls(
            policy=policy,
            share_within_target=result.share_within(latency_target_ms / 1e3),
            p50_ms=result.latency_ms(50),
            p95_ms=result.latency_ms(95),
            p99_ms=result.latency_ms(99),
            replica_seconds=result.replica_seconds,
            scale_events=result.scale_events,
        )


@dataclass(frozen=True)
class SingleSetting:
    """Ray's default with one ``target_ongoing_requests`` for every trace."""

    target_ongoing_requests: float | None  # None: no grid value reaches our share everywhere
    replica_seconds: float
    ours_replica_seconds: float


@dataclass(frozen=True)
class TraceReport:
    trace: str
    description: str
    requests: int
    ours: Row
    ray_stock: Row
    ray_tuned: Row | None  # cheapest Ray setting reaching our share, if any
    ray_best: Row  # Ray's highest share over the sweep
    verdict: str


def ray_label(target: float) -> str:
    return f"ray default (target_ongoing_requests={target:g})"


def _run(setup: Setup, trace_index: int, ray_target: float | None) -> SimResult:
    trace = setup.traces()[trace_index]
    arrivals = trace.arrivals(setup.seed)
    return simulate(arrivals, trace.duration_s, setup.config(trace, ray_target), setup.sim)


def _verdict(ours: Row, tuned: Row | None, best: Row) -> str:
    meets = "meets" if ours.share_within_target >= 0.99 else "misses"
    head = f"ours {meets} 99% ({ours.share_within_target:.2%})"
    if tuned is None:
        return (
            f"{head}; no Ray setting reaches that share (best {best.share_within_target:.2%} "
            f"at {best.replica_seconds:.0f} replica-s vs ours {ours.replica_seconds:.0f})"
        )
    saving = 1.0 - ours.replica_seconds / tuned.replica_seconds
    direction = "fewer" if saving >= 0 else "more"
    return (
        f"{head}; {abs(saving):.0%} {direction} replica-seconds than {tuned.policy} "
        f"({tuned.share_within_target:.2%})"
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
    """The cheapest grid value of Ray's knob that reaches our share on every trace."""
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
        return SingleSetting(None, math.nan, ours_total)
    return SingleSetting(best[0], best[1], ours_total)


def compare(setup: Setup, out_dir: Path, workers: int) -> tuple[list[TraceReport], SingleSetting]:
    traces = setup.traces()
    target_ms = setup.latency_target_ms
    with ProcessPoolExecutor(max_workers=workers) as pool:
        ours_jobs = {i: pool.submit(_run, setup, i, None) for i in range(len(traces))}
        ray_jobs = {
            (i, t): pool.submit(_run, setup, i, t)
            for i in range(len(traces))
            for t in setup.ray_targets
        }
        ours = {i: job.result() for i, job in ours_jobs.items()}
        ray: dict[int, dict[float, SimResult]] = {i: {} for i in range(len(traces))}
        for (i, t), job in ray_jobs.items():
            ray[i][t] = job.result()
        goals = {i: ours[i].share_within(target_ms / 1e3) for i in ours}
        refine_jobs = {
            (i, t): pool.submit(_run, setup, i, t)
            for i in range(len(traces))
            for t in _refinements(ray[i], goals[i], setup)
        }
        for (i, t), job in refine_jobs.items():
            ray[i][t] = job.result()

    reports = []
    grid: list[dict[float, Row]] = []
    for i, trace in enumerate(traces):
        rows = {t: Row.of(ray_label(t), r, target_ms) for t, r in ray[i].items()}
        grid.append(rows)
        ours_row = Row.of(OURS, ours[i], target_ms)
        passing = [r for r in rows.values() if r.share_within_target >= goals[i]]
        tuned = min(passing, key=lambda r: r.replica_seconds) if passing else None
        best = max(rows.values(), key=lambda r: (r.share_within_target, -r.replica_seconds))
        reports.append(
            TraceReport(
                trace=trace.name,
                description=trace.description,
                requests=ours[i].requests,
                ours=ours_row,
                ray_stock=rows[RAY_STOCK_TARGET],
                ray_tuned=tuned,
                ray_best=best,
                verdict=_verdict(ours_row, tuned, best),
            )
        )
        tuned_target = _target_of(tuned) if tuned else None
        shown = {OURS: ours[i], ray_label(RAY_STOCK_TARGET): ray[i][RAY_STOCK_TARGET]}
        if tuned_target is not None and tuned_target != RAY_STOCK_TARGET:
            shown[ray_label(tuned_target) + " tuned"] = ray[i][tuned_target]
        plot_trace(out_dir / f"{trace.name}.png", trace.description, shown, target_ms)
    return reports, single_setting(setup, reports, grid)


def _target_of(row: Row) -> float:
    return float(row.policy.split("=")[1].rstrip(")"))


def format_table(
    reports: Sequence[TraceReport], single: SingleSetting, latency_target_ms: float
) -> str:
    header = (
        f"| trace | policy | within {latency_target_ms:g} ms | p50 ms | p95 ms | p99 ms "
        "| replica-s | scale events |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for report in reports:
        rows = [("", report.ours), ("", report.ray_stock)]
        if report.ray_tuned is not None and report.ray_tuned != report.ray_stock:
            rows.append((" (tuned)", report.ray_tuned))
        elif report.ray_tuned is None and report.ray_best != report.ray_stock:
            rows.append((" (best share)", report.ray_best))
        for suffix, row in rows:
            lines.append(
                f"| {report.trace} | {row.policy}{suffix} | {row.share_within_target:.2%} "
                f"| {row.p50_ms:.0f} | {row.p95_ms:.0f} | {row.p99_ms:.0f} "
                f"| {row.replica_seconds:.0f} | {row.scale_events} |"
            )
    verdicts = [f"- {r.trace}: {r.verdict}" for r in reports]
    if single.target_ongoing_requests is None:
        summary = "- all traces: no single Ray setting reaches our share on every trace"
    else:
        summary = (
            f"- all traces, one setting each: ours {single.ours_replica_seconds:.0f} replica-s, "
            f"Ray's default needs target_ongoing_requests={single.target_ongoing_requests:g} "
            f"to reach our share on every trace: {single.replica_seconds:.0f} replica-s"
        )
    return "\n".join([*lines, "", *verdicts, summary])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for JSON + PNGs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Our policy logs every decision to Serve's logger; thousands here.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    setup = Setup()
    reports, single = compare(setup, args.out, args.workers)
    table = format_table(reports, single, setup.latency_target_ms)
    print(table)
    payload = {
        "setup": {
            **asdict(setup),
            "policy_kwargs": setup.policy_kwargs(),
            "max_rate_rps_per_replica": setup.service.max_rate_rps(),
        },
        "traces": [asdict(report) for report in reports],
        "single_setting": asdict(single),
    }
    (args.out / "comparison.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "comparison.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
