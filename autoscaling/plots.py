"""One PNG per trace: offered load, replicas and per-second p99 over time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np

from autoscaling.simulator import SimResult


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
