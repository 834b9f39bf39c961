"""One scenario's repeats folded into medians, and each figure set against the ceiling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from benchmarks.ceilings import AnyCeiling, throughput
from benchmarks.cpu_use import RunCpu, ms_per_request
from benchmarks.generation_ceiling import GenerationCeiling
from benchmarks.rerank_ceiling import RerankCeiling
from benchmarks.stats import LatencySummary, RunStats, median


@dataclass(frozen=True)
class Ratios:
    """Service over ceiling: 1.0 means as fast as in-process `encode` (or `generate`)."""

    inputs_per_s_vs_ceiling: float | None
    inputs_per_s_vs_automodel: float | None
    # Service p50 over one in-process `encode` of the same number of inputs (`generate` of one
    # prompt for completions).
    p50_vs_ceiling_latency: float | None
    p99_over_p50: float | None
    # Single-input embeddings: p50 over one in-process `encode` called after a lone client's
    # pause (`CeilingResult.paused_single_ms`).
    p50_vs_paused_pass: float | None = None
    # Throughput over the same ceiling measured again beside the idle service: the part of
    # the gap that the node, not the service, takes (benchmarks/ceilings.py).
    inputs_per_s_vs_ceiling_beside_service: float | None = None


@dataclass(frozen=True)
class StreamTiming:
    """Streamed answers: time to the first text and between texts (medians over repeats),
    beside the in-process loop's own time per decoding step."""

    first_token_p50_ms: float | None
    first_token_p99_ms: float | None
    token_gap_p50_ms: float | None
    token_gap_p99_ms: float | None
    ceiling_step_ms: float | None


def stream_timing(runs: Sequence[RunStats], step_ms: float | None) -> StreamTiming | None:
    if all(run.first_token is None for run in runs):
        return None
    first_token = [run.first_token for run in runs]
    token_gap = [run.token_gap for run in runs]
    return StreamTiming(
        first_token_p50_ms=_median_percentile(first_token, "p50_ms"),
        first_token_p99_ms=_median_percentile(first_token, "p99_ms"),
        token_gap_p50_ms=_median_percentile(token_gap, "p50_ms"),
        token_gap_p99_ms=_median_percentile(token_gap, "p99_ms"),
        ceiling_step_ms=step_ms,
    )


@dataclass(frozen=True)
class ScenarioSummary:
    name: str
    load: str
    inputs_per_request: int
    offered_rps: float | None
    repeats: int
    throughput_rps: float
    inputs_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    requests_ok: int
    errors_by_status: dict[str, int]
    generator_cpu_fraction: float
    system_cpu_percent: float | None
    # CPU of all the service's processes per answered request, and each role's share (ms).
    service_cpu_ms_per_request: float | None
    cpu_ms_per_request_by_role: dict[str, float]
    ratios: Ratios
    runs: list[RunStats]
    endpoint: str = "embeddings"
    stream: StreamTiming | None = None


def _median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def _median_percentile(
    summaries: Sequence[LatencySummary | None], field: Literal["p50_ms", "p95_ms", "p99_ms"]
) -> float | None:
    """The median over repeats of one percentile, from the runs that measured any."""
    return _median_or_none([getattr(summary, field) for summary in summaries if summary])


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None where either is missing (or the denominator is 0)."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def summarize_scenario(
    name: str,
    load: str,
    inputs_per_request: int,
    runs: Sequence[RunStats],
    ceiling: AnyCeiling | None,
    offered_rps: float | None = None,
    system_cpu_percent: Sequence[float] = (),
    service_cpu: Sequence[RunCpu] = (),
    endpoint: str = "embeddings",
    beside_service: AnyCeiling | None = None,
) -> ScenarioSummary:
    """Median of each figure over the repeats (the issue's method), then ratios."""
    if not runs:
        raise ValueError("no runs to summarize")
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors_by_status)
    inputs_per_s = median([r.inputs_per_s for r in runs])
    latencies = [run.latency for run in runs]
    p50_ms = _median_percentile(latencies, "p50_ms")
    p99_ms = _median_percentile(latencies, "p99_ms")
    # The ceiling's AutoModel variant's rate and its latency for one request.
    automodel_rate: float | None = None
    latency_ms: float | None = None
    paused_ms: float | None = None
    if isinstance(ceiling, GenerationCeiling):
        latency_ms = ceiling.single_request_ms
    elif isinstance(ceiling, RerankCeiling):
        latency_ms = ceiling.request_ms
    elif ceiling is not None:
        automodel_rate = ceiling.automodel_inputs_per_s
        latency_ms = ceiling.latency_ms(inputs_per_request)
        paused_ms = ceiling.paused_single_ms if inputs_per_request == 1 else None
    ratios = Ratios(
        inputs_per_s_vs_ceiling=ratio(inputs_per_s, throughput(ceiling)),
        inputs_per_s_vs_automodel=ratio(inputs_per_s, automodel_rate),
        p50_vs_ceiling_latency=ratio(p50_ms, latency_ms),
        p99_over_p50=ratio(p99_ms, p50_ms),
        p50_vs_paused_pass=ratio(p50_ms, paused_ms),
        inputs_per_s_vs_ceiling_beside_service=ratio(inputs_per_s, throughput(beside_service)),
    )
    cpu_ms, cpu_ms_by_role = ms_per_request(service_cpu)
    return ScenarioSummary(
        name=name,
        load=load,
        inputs_per_request=inputs_per_request,
        offered_rps=offered_rps,
        repeats=len(runs),
        throughput_rps=median([r.throughput_rps for r in runs]),
        inputs_per_s=inputs_per_s,
        p50_ms=p50_ms,
        p95_ms=_median_percentile(latencies, "p95_ms"),
        p99_ms=p99_ms,
        requests_ok=sum(r.requests_ok for r in runs),
        errors_by_status=dict(sorted(errors.items())),
        generator_cpu_fraction=median([r.generator_cpu_fraction for r in runs]),
        system_cpu_percent=_median_or_none(list(system_cpu_percent)),
        service_cpu_ms_per_request=cpu_ms,
        cpu_ms_per_request_by_role=cpu_ms_by_role,
        ratios=ratios,
        runs=list(runs),
        endpoint=endpoint,
        stream=stream_timing(
            runs, ceiling.step_ms if isinstance(ceiling, GenerationCeiling) else None
        ),
    )


def _beside_ratio(scenario: ScenarioSummary | None) -> float | None:
    return scenario.ratios.inputs_per_s_vs_ceiling_beside_service if scenario else None


def headline(scenarios: Sequence[ScenarioSummary]) -> dict[str, float | None]:
    """The few figures the issue tracks: best ratios and tail growth near 70% load."""
    embeddings = [s for s in scenarios if s.endpoint == "embeddings"]
    completions = [s for s in scenarios if s.endpoint == "completions"]
    rerank = [s for s in scenarios if s.endpoint == "rerank"]
    single = [s for s in embeddings if s.inputs_per_request == 1 and s.offered_rps is None]
    multi = [s for s in embeddings if s.inputs_per_request > 1]
    sweep = [s for s in embeddings if s.offered_rps is not None]
    # A lone request: one client, waiting for each answer before sending the next.
    lone_single = next((s for s in single if s.load == "closed c=1"), None)
    lone_multi = next((s for s in multi if s.load == "closed c=1"), None)
    best_single = max(single, key=lambda s: s.inputs_per_s, default=None)
    best_multi = max(multi, key=lambda s: s.inputs_per_s, default=None)
    peak_rps = best_single.throughput_rps if best_single else None
    # The sweep point whose offered rate is nearest 70% of the best closed-loop rate.
    near_70 = (
        min(sweep, key=lambda s: abs((s.offered_rps or 0.0) - 0.7 * peak_rps))
        if sweep and peak_rps
        else None
    )
    return {
        "single_input_max_rps": peak_rps,
        "single_input_vs_ceiling": best_single.ratios.inputs_per_s_vs_ceiling
        if best_single
        else None,
        "single_input_vs_ceiling_beside_service": _beside_ratio(best_single),
        "multi_input_vs_ceiling": best_multi.ratios.inputs_per_s_vs_ceiling if best_multi else None,
        "lone_single_p50_vs_pass": lone_single.ratios.p50_vs_ceiling_latency
        if lone_single
        else None,
        "lone_single_p50_vs_paused_pass": lone_single.ratios.p50_vs_paused_pass
        if lone_single
        else None,
        "lone_multi_p50_vs_encode": lone_multi.ratios.p50_vs_ceiling_latency
        if lone_multi
        else None,
        "p99_over_p50_at_70pct": near_70.ratios.p99_over_p50 if near_70 else None,
        "completions_vs_ceiling": completions[0].ratios.inputs_per_s_vs_ceiling
        if completions
        else None,
        "completions_vs_ceiling_beside_service": _beside_ratio(
            completions[0] if completions else None
        ),
        "rerank_vs_ceiling": max(
            (s.ratios.inputs_per_s_vs_ceiling or 0.0 for s in rerank), default=None
        ),
    }
