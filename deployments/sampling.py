"""Per-request sampling inside one batched `generate`: each row its own temperature, top_p, seed.

transformers' `generate` takes one temperature for the whole batch, so the service samples each row
itself in a logits processor and leaves a single finite logit; `generate` then runs greedy and
picks exactly that token. Greedy rows (temperature 0) are left untouched, so their output is what
plain greedy `generate` gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from deployments.generation_types import SamplingParams


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches `top_p` (1-D)."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_before < top_p
    # The most likely token is always kept, even for a top_p that rounds to 0 in float32.
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return torch.where(keep, probs, torch.zeros_like(probs))


def sample_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """Draw one token id from 1-D `logits` at `temperature` (> 0) with nucleus `top_p`."""
    # Scaled from the top logit, in float64: the top token gets 0 and the rest at most -inf, so
    # no temperature, however close to 0, overflows (or, as a float32, divides 0 by 0).
    shifted = logits.double() - logits.double().max()
    probs = torch.softmax((shifted / temperature).float(), dim=-1)
    probs = top_p_filter(probs, top_p)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy, independent of the global RNG
    else:
        generator.manual_seed(seed)
    return generator


class PerRowSampling(LogitsProcessor):
    """Samples each non-greedy row with its own parameters and RNG, then pins the choice."""

    def __init__(self, params: Sequence[SamplingParams]) -> None:
        self._params = list(params)
        self._generators: dict[int, torch.Generator] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, params in enumerate(self._params):
            if params.greedy:
                continue
            generator = self._generators.get(row)
            if generator is None:
                generator = self._generators[row] = make_generator(params.seed, scores.device)
            pin_sampled_token(scores[row], params, generator)
        return scores


def pin_sampled_token(
    row_scores: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> None:
    """Sample one token for a row in place: it keeps logit 0, every other token -inf, so the
    greedy choice that follows picks exactly it."""
    token = sample_token(row_scores, params.temperature, params.top_p, generator)
    row_scores.fill_(float("-inf"))
    row_scores[token] = 0.0
