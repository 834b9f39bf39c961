"""The ceilings measured quiet and again beside the idle service, and the figures set
against the second set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import ceiling as embedding_ceiling
from benchmarks import generation_ceiling, rerank_ceiling
from benchmarks.ceilings import (
    BESIDE_SERVICE,
    QUIET,
    Ceilings,
    CeilingSpec,
    measure_ceilings,
    throughput,
)
from benchmarks.generation_ceiling import GenerationCeiling
from benchmarks.loadgen import ClosedLoop, OpenLoop
from benchmarks.report import beside_service_lines, ratio_table
from benchmarks.rerank_ceiling import RerankCeiling
from benchmarks.stats import RunRecord, RunStats, summarize
from benchmarks.summary import headline, summarize_scenario
from tests.support.bench_results import ceiling_result


def generation(batch: int, requests_per_s: float) -> GenerationCeiling:
    return GenerationCeiling("m", "cpu", batch, 16, requests_per_s, 16 * requests_per_s, 20.0, "t")


RERANK = RerankCeiling("m", "cpu", 32, 16, 400.0, 40.0, "t")
QUIET_SET = Ceilings(
    ceiling_result(parallel_passes_inputs_per_s=250.0),
    {8: generation(8, 50.0), 32: generation(32, 80.0)},
    RERANK,
)
BESIDE_SET = Ceilings(
    ceiling_result(sentence_transformers_inputs_per_s=80.0, parallel_passes_inputs_per_s=225.0),
    {8: generation(8, 40.0)},
)


def runs(requests_per_s: float) -> list[RunStats]:
    record = RunRecord()
    for index in range(int(requests_per_s * 10)):
        record.add(index / requests_per_s, 0.05, 200)
    return [summarize(record, 1)]


def test_each_load_is_set_against_its_endpoints_ceiling() -> None:
    assert QUIET_SET.for_load("embeddings", ClosedLoop(32)) is QUIET_SET.embedding
    assert QUIET_SET.for_load("embeddings", OpenLoop(rate_rps=5.0)) is QUIET_SET.embedding
    # Completions: the generation ceiling whose batch is the number of clients.
    assert QUIET_SET.for_load("completions", ClosedLoop(32)) is QUIET_SET.generation[32]
    assert QUIET_SET.for_load("completions", ClosedLoop(4)) is None
    assert QUIET_SET.for_load("rerank", ClosedLoop(8)) is RERANK
    assert Ceilings().for_load("embeddings", ClosedLoop(1)) is None


def test_throughput_is_each_ceilings_own_unit() -> None:
    assert throughput(QUIET_SET.embedding) == 100.0  # sentence-transformers inputs/s
    assert throughput(QUIET_SET.generation[8]) == 50.0  # requests/s
    assert throughput(RERANK) == 400.0  # pairs/s
    assert throughput(None) is None


def test_a_scenario_is_also_set_against_the_ceiling_beside_the_service() -> None:
    single = summarize_scenario(
        "single c=32", "closed c=32", 1, runs(72.0), QUIET_SET.embedding, None,
        beside_service=BESIDE_SET.embedding,
    )  # fmt: skip
    completions = summarize_scenario(
        "completions c=8", "closed c=8", 1, runs(30.0), QUIET_SET.generation[8], None,
        endpoint="completions", beside_service=BESIDE_SET.generation[8],
    )  # fmt: skip
    assert single.ratios.inputs_per_s_vs_ceiling == pytest.approx(single.inputs_per_s / 100.0)
    assert single.ratios.inputs_per_s_vs_ceiling_beside_service == pytest.approx(
        single.inputs_per_s / 80.0
    )
    top = headline([single, completions])
    assert top["single_input_vs_ceiling_beside_service"] == pytest.approx(single.inputs_per_s / 80)
    assert top["completions_vs_ceiling_beside_service"] == pytest.approx(
        completions.inputs_per_s / 40.0
    )
    # Not measured (the service was already running, or no ceiling at all): no ratio.
    alone = summarize_scenario("single c=1", "closed c=1", 1, runs(72.0), QUIET_SET.embedding)
    assert alone.ratios.inputs_per_s_vs_ceiling_beside_service is None
    assert headline([alone])["single_input_vs_ceiling_beside_service"] is None
    header, _, row = ratio_table([single]).splitlines()
    assert "x beside" in header
    assert f"{single.inputs_per_s / 80.0:.2f}" in row.split()


def test_the_report_sets_each_ceiling_beside_the_service_against_its_quiet_self() -> None:
    lines = beside_service_lines(QUIET_SET, BESIDE_SET)
    assert lines == [
        "ceiling beside the idle service (its processes and Ray's up, no requests): "
        "sentence-transformers 80.0 inputs/s (0.80 of the quiet one), "
        "2 passes x 1 thread 225 (0.90)",
        "generation ceiling beside the idle service, batch 8: 40.0 requests/s "
        "(0.80 of the quiet one)",
    ]
    assert beside_service_lines(QUIET_SET, Ceilings()) == []


def test_both_sets_measure_the_same_things_into_their_own_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def recorder(result: Any) -> Any:
        def measure_in_subprocess(json_out: Path, *args: Any, **kwargs: Any) -> Any:
            calls.append((json_out.name, {"args": args, **kwargs}))
            return result

        return measure_in_subprocess

    monkeypatch.setattr(embedding_ceiling, "measure_in_subprocess", recorder(ceiling_result()))
    monkeypatch.setattr(generation_ceiling, "measure_in_subprocess", recorder(generation(8, 5.0)))
    monkeypatch.setattr(rerank_ceiling, "measure_in_subprocess", recorder(RERANK))
    spec = CeilingSpec(
        seed=3, words_per_input=16, batch_size=32, duration_s=2.0,
        generation_path="/models/gen", generation_batches=(8, 32), rerank_path="/models/rr",
    )  # fmt: skip
    quiet = measure_ceilings(spec, tmp_path, QUIET)
    quiet_calls = list(calls)
    calls.clear()
    beside = measure_ceilings(spec, tmp_path, BESIDE_SERVICE)
    assert [name for name, _ in quiet_calls] == [
        "ceiling.json",
        "generation_ceiling_8.json",
        "generation_ceiling_32.json",
        "rerank_ceiling.json",
    ]
    assert [name for name, _ in calls] == [
        "ceiling_beside_service.json",
        "generation_ceiling_8_beside_service.json",
        "generation_ceiling_32_beside_service.json",
        "rerank_ceiling_beside_service.json",
    ]
    assert [options for _, options in calls] == [options for _, options in quiet_calls]
    assert sorted(quiet.generation) == sorted(beside.generation) == [8, 32]
    assert quiet.rerank is beside.rerank is RERANK
    # Without a generation or rerank model only the embedding ceiling is measured.
    calls.clear()
    only = measure_ceilings(CeilingSpec(seed=3, words_per_input=16, batch_size=32, duration_s=2.0),
                            tmp_path, QUIET)  # fmt: skip
    assert [name for name, _ in calls] == ["ceiling.json"]
    assert only.generation == {}
    assert only.rerank is None
