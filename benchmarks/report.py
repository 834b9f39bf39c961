"""Results out: JSON files, a ratio table for the terminal, and PNG plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.ceiling import LONE_CLIENT_PAUSE_S, CeilingResult
from benchmarks.ceilings import AnyCeiling, Ceilings, throughput
from benchmarks.generation_ceiling import GenerationCeiling
from benchmarks.rerank_ceiling import RerankCeiling
from benchmarks.summary import ScenarioSummary, ratio


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def format_ms(value: float | None) -> str:
    """A latency for a markdown table: whole milliseconds, or '-' when there is none."""
    return "-" if value is None else f"{value:.0f} ms"


def _where(ceiling: CeilingResult) -> str:
    if ceiling.device == "cpu":
        return f"CPU, {ceiling.torch_threads} torch threads"
    return f"{ceiling.device}, float16"


def generation_ceiling_line(ceiling: GenerationCeiling) -> str:
    return (
        f"generation ceiling (in-process greedy generate, {ceiling.device}, batch "
        f"{ceiling.batch_size}, {ceiling.max_tokens} tokens): {ceiling.requests_per_s:.1f} "
        f"requests/s, {ceiling.completion_tokens_per_s:.0f} completion tokens/s; one prompt "
        f"alone {ceiling.single_request_ms:.0f} ms; {ceiling.step_ms:.1f} ms per decoding step"
    )


def rerank_ceiling_line(ceiling: RerankCeiling) -> str:
    return (
        f"rerank ceiling (in-process CrossEncoder.predict, {ceiling.device}, batch "
        f"{ceiling.batch_size} pairs): {ceiling.pairs_per_s:.0f} pairs/s; one request of "
        f"{ceiling.documents_per_request} documents {ceiling.request_ms:.1f} ms"
    )


def _paused(ceiling: CeilingResult) -> str:
    if ceiling.paused_single_ms is None:
        return ""
    return (
        f"; batch 1 after {LONE_CLIENT_PAUSE_S * 1e3:.0f} ms idle (a lone client's rhythm): "
        f"{ceiling.paused_single_ms:.1f} ms"
    )


def ceiling_lines(ceiling: CeilingResult) -> list[str]:
    latencies = ", ".join(f"batch {k}: {v:.1f} ms" for k, v in ceiling.latency_ms_by_batch.items())
    lines = [
        f"ceiling (in-process, {_where(ceiling)}, batch {ceiling.batch_size}): "
        f"sentence-transformers {ceiling.sentence_transformers_inputs_per_s:.0f} inputs/s, "
        f"AutoModel+mean-pool {ceiling.automodel_inputs_per_s:.0f} inputs/s",
        f"ceiling encode latency: {latencies}" + _paused(ceiling),
        f"machine CPU busy while measuring the ceiling: {ceiling.host_cpu_percent:.0f}% "
        f"(the ceiling itself: {ceiling.own_cpu_percent:.0f}%)",
        "ceiling windows (inputs/s): sentence-transformers "
        + " ".join(f"{r:.0f}" for r in ceiling.sentence_transformers_window_rates)
        + ", AutoModel "
        + " ".join(f"{r:.0f}" for r in ceiling.automodel_window_rates),
    ]
    if ceiling.machine:
        lines.append(f"machine: {ceiling.machine}")
    if ceiling.parallel_passes_inputs_per_s is not None:
        lines.append(
            "for reference, AutoModel as 2 concurrent passes x 1 torch thread (a replica's "
            f"parallel_passes: 2): {ceiling.parallel_passes_inputs_per_s:.0f} inputs/s"
        )
    return lines


def _share(beside: AnyCeiling, quiet: AnyCeiling | None, unit: str) -> str:
    share = _fmt(ratio(throughput(beside), throughput(quiet)), ".2f")
    return f"{throughput(beside) or 0.0:.1f} {unit} ({share} of the quiet one)"


def beside_service_lines(quiet: Ceilings, beside: Ceilings) -> list[str]:
    """The ceilings measured again beside the idle service, each against its quiet self."""
    lines: list[str] = []
    if beside.embedding is not None and quiet.embedding is not None:
        passes = beside.embedding.parallel_passes_inputs_per_s
        quiet_passes = quiet.embedding.parallel_passes_inputs_per_s
        lines.append(
            "ceiling beside the idle service (its processes and Ray's up, no requests): "
            f"sentence-transformers {_share(beside.embedding, quiet.embedding, 'inputs/s')}"
            + (
                ""
                if passes is None
                else f", 2 passes x 1 thread {passes:.0f} "
                f"({_fmt(ratio(passes, quiet_passes), '.2f')})"
            )
        )
    for batch, ceiling in beside.generation.items():
        lines.append(
            f"generation ceiling beside the idle service, batch {batch}: "
            f"{_share(ceiling, quiet.generation.get(batch), 'requests/s')}"
        )
    if beside.rerank is not None:
        lines.append(
            "rerank ceiling beside the idle service: "
            + _share(beside.rerank, quiet.rerank, "pairs/s")
        )
    return lines


_COLUMNS = (
    ("scenario", 22),
    ("load", 16),
    ("req/s", 8),
    ("inputs/s", 9),
    ("x ceil", 7),
    ("x beside", 8),
    ("p50 ms", 8),
    ("p95 ms", 8),
    ("p99 ms", 8),
    ("p50 x", 7),
    ("p99/p50", 7),
    ("errors", 14),
    ("gen cpu", 7),
    ("host cpu", 8),
    ("cpu ms/req", 10),
)


def ratio_table(scenarios: Sequence[ScenarioSummary]) -> str:
    """One row per scenario; `x ceil` and `p50 x` are ratios to the ceiling, `x beside` to the
    ceiling measured beside the idle service.

    `gen cpu` is the load generator's share of one core; `host cpu` is the whole
    machine's busy percentage during the run (all cores); `cpu ms/req` is the CPU of all the
    service's processes per answered request.
    """
    header = " ".join(name.rjust(width) for name, width in _COLUMNS)
    lines = [header, "-" * len(header)]
    for s in scenarios:
        errors = ",".join(f"{k}:{v}" for k, v in s.errors_by_status.items()) or "0"
        cells = (
            s.name,
            s.load,
            f"{s.throughput_rps:.1f}",
            f"{s.inputs_per_s:.1f}",
            _fmt(s.ratios.inputs_per_s_vs_ceiling, ".2f"),
            _fmt(s.ratios.inputs_per_s_vs_ceiling_beside_service, ".2f"),
            _fmt(s.p50_ms, ".1f"),
            _fmt(s.p95_ms, ".1f"),
            _fmt(s.p99_ms, ".1f"),
            _fmt(s.ratios.p50_vs_ceiling_latency, ".2f"),
            _fmt(s.ratios.p99_over_p50, ".1f"),
            errors,
            f"{s.generator_cpu_fraction:.0%}",
            _fmt(s.system_cpu_percent, ".0f"),
            _fmt(s.service_cpu_ms_per_request, ".1f"),
        )
        lines.append(" ".join(c.rjust(w) for c, (_, w) in zip(cells, _COLUMNS, strict=True)))
    return "\n".join(lines)


def stream_lines(scenarios: Sequence[ScenarioSummary]) -> list[str]:
    """Streamed scenarios: time to first token and inter-token gaps, against the in-process
    loop's time per decoding step."""
    lines = []
    for s in scenarios:
        if s.stream is None:
            continue
        t = s.stream
        ms = [_fmt(v, ".1f") for v in (t.first_token_p50_ms, t.first_token_p99_ms)]
        gaps = [_fmt(v, ".2f") for v in (t.token_gap_p50_ms, t.token_gap_p99_ms, t.ceiling_step_ms)]
        lines.append(
            f"  {s.name}: first token p50 {ms[0]} ms, p99 {ms[1]} ms; between tokens p50 "
            f"{gaps[0]} ms, p99 {gaps[1]} ms; in-process decoding step {gaps[2]} ms"
        )
    return ["streamed answers:", *lines] if lines else []


def cpu_breakdown_lines(scenarios: Sequence[ScenarioSummary], roles: int = 4) -> list[str]:
    """Where each scenario's service CPU went: the largest roles, the rest summed as `other`."""
    lines = []
    for s in scenarios:
        if s.service_cpu_ms_per_request is None:
            continue
        shares = list(s.cpu_ms_per_request_by_role.items())
        parts = [f"{name} {ms:.2f}" for name, ms in shares[:roles]]
        rest = sum(ms for _, ms in shares[roles:])
        if rest:
            parts.append(f"other {rest:.2f}")
        lines.append(f"  {s.name}: {s.service_cpu_ms_per_request:.2f} = " + ", ".join(parts))
    if lines:
        lines.insert(0, "service CPU per answered request (ms), by process:")
    return lines


def headline_line(figures: Mapping[str, float | None]) -> str:
    return "headline: " + ", ".join(f"{k} {_fmt(v, '.2f')}" for k, v in figures.items())


# Dispatch later than this and open-loop latency measures the client, not the service.
LATE_DISPATCH_MS = 50.0


# Machine busier than the ceiling's own share by more than this: someone else ran too.
BUSY_MARGIN_PERCENT = 25.0


def warnings(
    scenarios: Sequence[ScenarioSummary], ceiling: CeilingResult | None = None
) -> list[str]:
    """Figures that the load generator or other work on the machine may have distorted."""
    notes: list[str] = []
    if ceiling and ceiling.host_cpu_percent - ceiling.own_cpu_percent > BUSY_MARGIN_PERCENT:
        notes.append(
            f"other work used {ceiling.host_cpu_percent - ceiling.own_cpu_percent:.0f}% "
            "of the machine while the ceiling was measured; ratios are unreliable"
        )
    for s in scenarios:
        lag_ms = max(r.max_dispatch_lag_ms for r in s.runs)
        if lag_ms > LATE_DISPATCH_MS:
            notes.append(
                f"{s.name}: generator dispatched up to {lag_ms:.0f} ms late; "
                "its latencies include client-side lag"
            )
        if s.generator_cpu_fraction > 0.5:
            notes.append(
                f"{s.name}: generator used {s.generator_cpu_fraction:.0%} of a core, "
                "taken from the service"
            )
    return notes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_throughput(
    scenarios: Sequence[ScenarioSummary], ceiling: CeilingResult | None, path: Path
) -> Path:
    """Latency (log) against achieved inputs/s: open-loop sweep as a curve,
    closed-loop runs as labelled points, the ceiling as vertical lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    sweep = sorted(
        (s for s in scenarios if s.offered_rps is not None and s.p50_ms is not None),
        key=lambda s: s.inputs_per_s,
    )
    if sweep:
        xs = [s.inputs_per_s for s in sweep]
        ax.plot(xs, [s.p50_ms for s in sweep], "o-", label="open loop p50")
        ax.plot(xs, [s.p99_ms for s in sweep], "s--", label="open loop p99")
    for s in scenarios:
        if s.offered_rps is None and s.p50_ms is not None:
            ax.errorbar(
                [s.inputs_per_s],
                [s.p50_ms],
                yerr=[[0.0], [max((s.p99_ms or s.p50_ms) - s.p50_ms, 0.0)]],
                fmt="^",
                capsize=3,
            )
            ax.annotate(
                s.name,
                (s.inputs_per_s, s.p50_ms),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    if ceiling is not None:
        ax.axvline(
            ceiling.sentence_transformers_inputs_per_s,
            color="k",
            ls=":",
            label="ceiling: sentence-transformers",
        )
        ax.axvline(
            ceiling.automodel_inputs_per_s, color="grey", ls="-.", label="ceiling: AutoModel"
        )
    ax.set_yscale("log")
    ax.set_xlabel("achieved inputs/s")
    ax.set_ylabel("latency ms (closed loop: p50 to p99 bar)")
    ax.set_title("Latency versus throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_series(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Several named (x, y) lines on one chart: RSS or latency over a soak run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if 1 < len(series) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
