"""Forward passes grouped by input length, so short inputs are not padded to a long one's length.

A batch is padded to its longest row, and a padded token costs the same as a real one. On CPU
a pass costs about a fixed amount plus a constant per token (all-MiniLM-L6-v2, 2 threads:
~0.15-0.19 ms per token from 11 to 253 tokens, plus ~5 ms, the work of ~30 tokens). So when a
batch mixes a 250-token document with 31 ten-token queries, one pass does 8,000 tokens of work
for 560 real ones; the same rows sorted by length in two passes do about 560 + 1 pass.

`length_groups` picks the cut points exactly (dynamic programming over the sorted lengths):
it minimises padded tokens plus `pass_overhead_tokens` for each pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from deployments.loading.source import LengthGrouping

# `auto`, `off`, or what one more pass costs, in tokens of work, on the model's device.

# Measured on CPU (see above) and rounded up: near-uniform batches stay one pass, where the
# small per-token gain of a bigger tensor outweighs the few padded tokens a split would save.
CPU_PASS_OVERHEAD_TOKENS = 64


def pass_overhead_tokens(setting: LengthGrouping, device: torch.device) -> int | None:
    """The overhead to group with, or None for one pass per batch.

    `auto` groups on CPU only: on a GPU a pass's fixed cost (kernel launches) is far larger and
    has not been measured here, so batches stay as they came unless a number is given.
    """
    if setting == "off":
        return None
    if setting == "auto":
        return CPU_PASS_OVERHEAD_TOKENS if device.type == "cpu" else None
    return setting


def length_groups(lengths: Sequence[int], pass_overhead_tokens: int) -> list[list[int]]:
    """Row indices in passes, shortest first, minimising padded tokens + overhead per pass.

    Rows of equal length always share a pass; one pass holds every row when splitting saves
    no more than it costs.
    """
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    if not order:
        return []
    # Runs of equal length: a pass ends only where the length changes.
    run_ends: list[int] = []  # index in `order` one past each run
    for position in range(1, len(order) + 1):
        if position == len(order) or lengths[order[position]] != lengths[order[position - 1]]:
            run_ends.append(position)
    # best[k]: least cost of the rows before run_ends[k - 1]; cut[k]: where its last pass starts.
    best = [0] + [0] * len(run_ends)
    cut = [0] * (len(run_ends) + 1)
    for k, end in enumerate(run_ends, start=1):
        longest = lengths[order[end - 1]]
        costs = (
            best[j] + (end - (run_ends[j - 1] if j else 0)) * longest + pass_overhead_tokens
            for j in range(k)
        )
        best[k], cut[k] = min((cost, j) for j, cost in enumerate(costs))
    groups: list[list[int]] = []
    k = len(run_ends)
    while k:
        start = run_ends[cut[k] - 1] if cut[k] else 0
        groups.append(order[start : run_ends[k - 1]])
        k = cut[k]
    return groups[::-1]


def forward_by_length(
    encoded: Mapping[str, torch.Tensor],
    rows_forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    pass_overhead_tokens: int | None,
    padding_side: str = "right",
) -> torch.Tensor:
    """`rows_forward` (one output row per input row) over length groups, rows in input order.

    `encoded` is the tokenizer's padded batch; each group is cut down to its longest row.
    `pass_overhead_tokens=None` runs one pass, as the batch came.
    """
    mask = encoded["attention_mask"]
    if pass_overhead_tokens is None or mask.shape[0] < 2:
        return rows_forward(dict(encoded))
    lengths = mask.sum(dim=1).tolist()
    groups = length_groups(lengths, pass_overhead_tokens)
    if len(groups) == 1:
        return rows_forward(dict(encoded))
    width = mask.shape[1]
    parts = []
    for rows in groups:
        index = torch.tensor(rows, device=mask.device)
        longest = max(lengths[row] for row in rows)
        columns = slice(0, longest) if padding_side == "right" else slice(width - longest, width)
        parts.append(rows_forward({name: t[index, columns] for name, t in encoded.items()}))
    # The groups hold the rows in sorted order; argsort of that order puts them back.
    order = torch.tensor([row for rows in groups for row in rows], device=mask.device)
    return torch.cat(parts)[torch.argsort(order)]
