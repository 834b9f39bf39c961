"""Benchmark results built by hand, for the tests of the reports that read them."""

from __future__ import annotations

from typing import Any

from benchmarks.ceiling import CeilingResult


def ceiling_result(**changes: Any) -> CeilingResult:
    """A ceiling of 100 (sentence-transformers) and 200 (AutoModel) inputs/s."""
    fields: dict[str, Any] = dict(
        model_path="m",
        batch_size=32,
        words_per_input=16,
        torch_threads=2,
        sentence_transformers_inputs_per_s=100.0,
        automodel_inputs_per_s=200.0,
        sentence_transformers_window_rates=[100.0],
        automodel_window_rates=[200.0],
        parallel_passes_inputs_per_s=None,
        latency_ms_by_batch={"1": 10.0, "32": 300.0},
        variants_max_abs_diff=0.0,
        host_cpu_percent=50.0,
        own_cpu_percent=50.0,
        measured_at="now",
    )
    return CeilingResult(**{**fields, **changes})
