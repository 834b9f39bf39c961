"""The rerank ceiling (CrossEncoder.predict in-process), the rerank load's bodies, and the
rerank figures set against the ceiling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.payloads import RERANK_PATH, make_texts, rerank_bodies, rerank_queries
from benchmarks.report import rerank_ceiling_line
from benchmarks.rerank_ceiling import RerankCeiling, measure, pairs_of
from benchmarks.stats import RunRecord, summarize
from benchmarks.summary import headline, summarize_scenario
from tests.support.bench_results import ceiling_result
from tests.support.tiny_models import build_tiny_cross_encoder

# 800 pairs/s in batches of 32; one request of 16 documents in 25 ms.
RERANK_CEILING = RerankCeiling("m", "cpu", 32, 16, 800.0, 25.0, "now")


def runs(latency_s: float, requests: int, documents: int) -> list[Any]:
    record = RunRecord()
    for index in range(requests):
        record.add(index / requests, latency_s, 200)
    return [summarize(record, documents)]


def test_requests_carry_a_query_and_its_documents_and_the_ceiling_scores_the_same_pairs() -> None:
    texts = [f"t{i}" for i in range(11)]
    assert rerank_queries(texts, 4) == [
        ("t0", ["t1", "t2", "t3", "t4"]),
        ("t5", ["t6", "t7", "t8", "t9"]),
    ]
    requests = rerank_bodies(texts, 4, "ranker")
    assert (requests.path, requests.inputs_per_request, len(requests.bodies)) == (RERANK_PATH, 4, 2)
    assert json.loads(requests.bodies[1]) == {
        "model": "ranker",
        "query": "t5",
        "documents": ["t6", "t7", "t8", "t9"],
    }
    assert pairs_of(texts, 4)[4:6] == [("t5", "t6"), ("t5", "t7")]
    with pytest.raises(ValueError, match="fewer texts"):
        rerank_bodies(texts[:3], 4, "ranker")


def test_rerank_is_set_against_the_rerank_ceiling_and_kept_apart_in_the_headline() -> None:
    # 40 requests of 16 documents in one second, 50 ms each.
    rerank = summarize_scenario(
        "rerank 16-doc c=2", "closed c=2", 16, runs(0.05, 40, 16), RERANK_CEILING,
        endpoint="rerank",
    )  # fmt: skip
    assert rerank.ratios.inputs_per_s_vs_ceiling == pytest.approx(rerank.inputs_per_s / 800.0)
    assert rerank.ratios.p50_vs_ceiling_latency == pytest.approx(2.0)  # 50 ms over 25 ms
    embeddings = summarize_scenario(
        "single c=32", "closed c=32", 1, runs(0.1, 20, 1), ceiling_result()
    )
    top = headline([embeddings, rerank])
    assert top["rerank_vs_ceiling"] == pytest.approx(rerank.ratios.inputs_per_s_vs_ceiling)
    assert top["single_input_max_rps"] == pytest.approx(embeddings.throughput_rps)
    assert top["multi_input_vs_ceiling"] is None  # a rerank request is not a multi-input one
    assert headline([embeddings])["rerank_vs_ceiling"] is None
    assert "800 pairs/s" in rerank_ceiling_line(RERANK_CEILING)


def test_the_ceiling_measures_cross_encoder_predict(tmp_path: Path) -> None:
    model = build_tiny_cross_encoder(tmp_path / "ce")
    pairs = pairs_of(make_texts(64, seed=0), 4)
    result = measure(str(model), pairs, batch_size=8, documents_per_request=4, duration_s=0.2)
    assert result.pairs_per_s > 0
    assert result.request_ms > 0
    assert (result.batch_size, result.documents_per_request) == (8, 4)
