"""Splitting a batch when left padding would run a row past the model's context.

Left padding widens every prompt to the longest, and `generate` runs the widest row for the
largest max_tokens, so a batch fits when `longest prompt + largest max_tokens <= context`.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_groups(shapes: Sequence[tuple[int, int]], context_tokens: int) -> list[list[int]]:
    """Indices of `(prompt_tokens, max_tokens)` jobs in as few context-fitting groups as needed.

    Each job alone must fit (the replica checks that before queueing). Usually one group: all.
    """
    groups: list[tuple[list[int], int, int]] = []  # (members, widest prompt, largest max_tokens)
    for index, (prompt_tokens, max_tokens) in enumerate(shapes):
        for position, (members, width, longest) in enumerate(groups):
            if max(width, prompt_tokens) + max(longest, max_tokens) <= context_tokens:
                members.append(index)
                groups[position] = (members, max(width, prompt_tokens), max(longest, max_tokens))
                break
        else:
            groups.append(([index], prompt_tokens, max_tokens))
    return [members for members, _, _ in groups]
