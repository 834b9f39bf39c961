"""Per-row sampling inside one batch: each request's temperature, top_p and seed are its own."""

from __future__ import annotations

from typing import Any

import torch

from deployments.contract import SamplingParams
from deployments.generation.sampling import (
    PerRowSampling,
    make_generator,
    sample_token,
    top_p_filter,
)


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    probs = torch.tensor([0.05, 0.5, 0.3, 0.15])

    def kept(top_p: float) -> list[bool]:
        return (top_p_filter(probs, top_p) > 0).tolist()

    assert kept(0.6) == [False, True, True, False]
    assert kept(0.85) == [False, True, True, True]
    assert kept(0.01) == [False, True, False, False]  # the top token always stays
    assert torch.equal(top_p_filter(probs, 1.0), probs)
    assert torch.equal(top_p_filter(probs, 0.6)[1:3], probs[1:3])


def test_seeded_draws_repeat_and_follow_the_distribution() -> None:
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    first = [sample_token(logits, 1.0, 1.0, make_generator(7, torch.device("cpu"))) for _ in "ab"]
    assert first[0] == first[1]
    generator = make_generator(0, torch.device("cpu"))
    draws = [sample_token(logits, 1.0, 1.0, generator) for _ in range(2000)]
    assert 0.65 < draws.count(0) / 2000 < 0.75
    generator = make_generator(0, torch.device("cpu"))
    assert {sample_token(logits, 1.0, 0.5, generator) for _ in range(200)} == {0}


def test_low_temperature_concentrates_on_the_top_token() -> None:
    logits = torch.tensor([1.0, 1.2, 0.9])
    generator = make_generator(1, torch.device("cpu"))
    assert {sample_token(logits, 0.01, 1.0, generator) for _ in range(100)} == {1}


def test_greedy_rows_are_untouched_and_sampled_rows_are_pinned() -> None:
    scores = torch.randn(3, 10)
    original = scores.clone()
    processor: Any = PerRowSampling(
        [SamplingParams(temperature=0.0), SamplingParams(1.0, 0.9, seed=3), SamplingParams(0.0)]
    )
    out = processor(torch.zeros((3, 1), dtype=torch.long), scores)
    assert torch.equal(out[0], original[0])
    assert torch.equal(out[2], original[2])
    assert torch.isfinite(out[1]).sum() == 1  # greedy generate will pick exactly the draw


def test_a_rows_draws_do_not_depend_on_its_batch_companions() -> None:
    def draws(params: list[SamplingParams]) -> list[int]:
        processor: Any = PerRowSampling(params)
        picked = []
        for step in range(20):
            rows = [
                torch.randn(50, generator=torch.Generator().manual_seed(step + 100 * row))
                for row in range(len(params))
            ]
            scores = torch.stack(rows)
            picked.append(int(processor(torch.zeros((len(params), 1)), scores)[0].argmax()))
        return picked

    alone = draws([SamplingParams(1.0, 1.0, seed=11)])
    with_company = draws([SamplingParams(1.0, 1.0, seed=11), SamplingParams(0.7, 0.8, seed=5)])
    assert alone == with_company
    assert alone != draws([SamplingParams(1.0, 1.0, seed=12)])
