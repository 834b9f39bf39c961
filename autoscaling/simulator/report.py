"""What the comparison reports: its rows per trace and policy, the table it prints, and one PNG
per trace (offered load, replicas and per-second p99 over time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np

from autoscaling.simulator.simulation import SimResult

OURS = "queue+latency"


def plot_trace(
    path: Path,
    title: str,
    results: Mapping[str, SimResult],
    latency_target_ms: float,
) -> None:
    """Three stacked panels sharing the time axis, one line per policy."""
    figure, (load_ax, replicas_ax, p99_ax) = plt.subplots(
        3, 1, figsize=(10, 8), sharex=True, constrained_layout=True
    )
    first = next(iter(results.values()))
    load_ax.plot(first.timeline_s, first.offered_rps, color="black", linewidth=0.8)
    load_ax.set_ylabel("offered load (rps)")
    load_ax.set_title(title)
    for label, result in results.items():
        replicas_ax.step(result.timeline_s, result.target_replicas, where="post", label=label)
        p99 = result.p99_per_second_ms()
        p99_ax.plot(result.timeline_s, np.minimum(p99, 10 * latency_target_ms), label=label)
    replicas_ax.set_ylabel("target replicas")
    replicas_ax.legend(loc="upper left", fontsize="small")
    p99_ax.axhline(latency_target_ms, color="red", linestyle="--", linewidth=0.8)
    p99_ax.set_yscale("log")
    p99_ax.set_ylabel("p99 per second (ms)")
    p99_ax.set_xlabel("time (s)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


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
class ScaleToZeroReport:
    """Our policy on one trace with ``min_replicas`` 1 and 0: the replica-seconds that idling at
    zero saves against what its cold starts cost the requests that arrive meanwhile."""

    trace: str
    idle_to_zero_s: float  # downscale_to_zero_delay_s
    startup_delay_s: float  # a cold start: load, warm-up, until the replica serves
    always_on: Row
    to_zero: Row
    replica_seconds_saved: float
    cold_starts: int
    requests_at_zero: int  # arrived while no replica ran
    at_zero_p50_ms: float
    at_zero_max_ms: float
    at_zero_within_target: float

    @classmethod
    def of(
        cls,
        trace: str,
        always_on: SimResult,
        to_zero: SimResult,
        latency_target_ms: float,
        idle_to_zero_s: float,
        startup_delay_s: float,
    ) -> ScaleToZeroReport:
        waited = to_zero.latency_s[to_zero.at_zero]
        return cls(
            trace=trace,
            idle_to_zero_s=idle_to_zero_s,
            startup_delay_s=startup_delay_s,
            always_on=Row.of("min_replicas 1", always_on, latency_target_ms),
            to_zero=Row.of("min_replicas 0", to_zero, latency_target_ms),
            replica_seconds_saved=always_on.replica_seconds - to_zero.replica_seconds,
            cold_starts=to_zero.cold_starts,
            requests_at_zero=int(waited.size),
            at_zero_p50_ms=float(1e3 * np.percentile(waited, 50)) if waited.size else 0.0,
            at_zero_max_ms=float(1e3 * waited.max()) if waited.size else 0.0,
            at_zero_within_target=float(np.mean(waited <= latency_target_ms / 1e3))
            if waited.size
            else 1.0,
        )


def format_scale_to_zero(report: ScaleToZeroReport, latency_target_ms: float) -> str:
    rows = [
        f"Scale to zero on `{report.trace}` (idle {report.idle_to_zero_s:g} s before zero, "
        f"cold start {report.startup_delay_s:g} s):",
        "",
        f"| policy | within {latency_target_ms:g} ms | p99 ms | replica-s | cold starts |",
        "|---|---|---|---|---|",
    ]
    for row, colds in ((report.always_on, 0), (report.to_zero, report.cold_starts)):
        rows.append(
            f"| {row.policy} | {row.share_within_target:.2%} | {row.p99_ms:.0f} "
            f"| {row.replica_seconds:.0f} | {colds} |"
        )
    saved = report.replica_seconds_saved / max(report.always_on.replica_seconds, 1e-9)
    rows += [
        "",
        f"- saves {report.replica_seconds_saved:.0f} replica-s ({saved:.0%}); "
        f"{report.requests_at_zero} requests arrived at zero replicas: p50 "
        f"{report.at_zero_p50_ms:.0f} ms, max {report.at_zero_max_ms:.0f} ms, "
        f"{report.at_zero_within_target:.0%} within {latency_target_ms:g} ms",
    ]
    return "\n".join(rows)


@dataclass(frozen=True)
class SingleSetting:
    """Each policy with one setting for every trace."""

    ours: OurSetting
    ours_replica_seconds: float
    target_ongoing_requests: float | None  # None: no grid value reaches our share everywhere
    replica_seconds: float
    # (trace, ours, Ray at that target), replica-seconds, when there is such a target
    per_trace: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class TraceReport:
    trace: str
    description: str
    requests: int
    ours: Row  # at Setup.default_setting
    ours_tuned: Row  # the cheapest grid setting reaching GOAL_SHARE, else the highest share
    ray_stock: Row
    ray_tuned: Row | None  # cheapest Ray setting reaching ours_tuned's share, if any
    ray_best: Row  # Ray's highest share over the sweep
    verdict: str


def ray_label(target: float) -> str:
    return f"ray default (target_ongoing_requests={target:g})"


def target_of(row: Row) -> float:
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
        same = report.ours_tuned.policy == report.ours.policy
        rows = [(" (one setting, tuned)" if same else " (one setting)", report.ours)]
        if not same:
            rows.append((" (tuned)", report.ours_tuned))
        if report.ray_tuned is None:
            rows.append((" (stock)", report.ray_stock))
            if report.ray_best != report.ray_stock:
                rows.append((" (best share)", report.ray_best))
        elif report.ray_tuned == report.ray_stock:
            rows.append((" (stock, tuned)", report.ray_stock))
        else:
            rows += [(" (stock)", report.ray_stock), (" (tuned)", report.ray_tuned)]
        for suffix, row in rows:
            lines.append(
                f"| {report.trace} | {row.policy}{suffix} | {row.share_within_target:.2%} "
                f"| {row.p50_ms:.0f} | {row.p95_ms:.0f} | {row.p99_ms:.0f} "
                f"| {row.replica_seconds:.0f} | {row.scale_events} |"
            )
    verdicts = [f"- {r.trace}: {r.verdict}" for r in reports]
    worst = min(r.ours.share_within_target for r in reports)
    ours_head = (
        f"- all traces, one setting each: ours ({single.ours.label}) at least {worst:.2%} "
        f"on every trace, {single.ours_replica_seconds:.0f} replica-s"
    )
    if single.target_ongoing_requests is None:
        summary = f"{ours_head}; no single Ray setting reaches our share on every trace"
    else:
        each = ", ".join(
            f"{trace} {ours:.0f} vs {ray:.0f}" for trace, ours, ray in single.per_trace
        )
        summary = (
            f"{ours_head}; Ray's default needs "
            f"target_ongoing_requests={single.target_ongoing_requests:g} to reach it on every "
            f"trace: {single.replica_seconds:.0f} replica-s (per trace, ours vs Ray: {each})"
        )
    return "\n".join([*lines, "", *verdicts, summary])


@dataclass(frozen=True)
class OurSetting:
    """The knobs of our policy that the comparison varies."""

    target_utilization: float
    burst_headroom_rps: float

    @property
    def label(self) -> str:
        burst = f", burst {self.burst_headroom_rps:g} rps" if self.burst_headroom_rps else ""
        return f"{OURS} (utilization {self.target_utilization:g}{burst})"
