"""Per-request sampling: each row its own temperature, top_p and seed, in a static batch's one
`generate` (PerRowSampling) and in continuous batching (SlotSampling), with the same semantics.

transformers' `generate` takes one temperature for the whole batch, so the service samples each row
itself in a logits processor and leaves a single finite logit; `generate` then runs greedy and
picks exactly that token. Greedy rows (temperature 0) are left untouched, so their output is what
plain greedy `generate` gives.

Continuous batching builds its logits processors from one generation config and samples every
row with one shared RNG, so a seed could not make a request reproducible. Instead each sampled
request carries a slot number in its `logit_processor_kwargs`; SlotSampling looks the slot up,
samples that row itself and pins the choice, and the loop's greedy argmax takes it. Greedy
requests carry no slot and are left untouched, unless they asked for logprobs: a row's raw
logits are scored (logprobs.py) before its token is pinned.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)

from deployments.contract import SamplingParams
from deployments.generation.logprobs import LogprobCapture


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
    """Samples each non-greedy row with its own parameters and RNG, then pins the choice; rows
    with a capture get their raw logits scored first."""

    def __init__(
        self,
        params: Sequence[SamplingParams],
        captures: Sequence[LogprobCapture | None] | None = None,
    ) -> None:
        self._params = list(params)
        self._captures = list(captures) if captures is not None else [None] * len(self._params)
        self._generators: dict[int, torch.Generator] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, (params, capture) in enumerate(zip(self._params, self._captures, strict=True)):
            if params.greedy and capture is None:
                continue
            generator = self._generators.get(row)
            if generator is None and not params.greedy:
                generator = self._generators[row] = make_generator(params.seed, scores.device)
            choose_token(scores[row], params, generator, capture)
        return scores


def choose_token(
    row_scores: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    capture: LogprobCapture | None,
) -> None:
    """One row's next token, in place: a sampled row keeps logit 0 for its draw and -inf for
    every other token, so the greedy choice that follows picks exactly it; a greedy row is left
    as it is. `capture` scores the raw logits before they are touched."""
    if params.greedy:
        token = int(torch.argmax(row_scores))
    else:
        assert generator is not None
        token = sample_token(row_scores, params.temperature, params.top_p, generator)
    if capture is not None:
        capture.record(row_scores, token)
    if not params.greedy:
        row_scores.fill_(float("-inf"))
        row_scores[token] = 0.0


SLOT_KWARG = "sampling_slot"
_NO_SLOT = -1


class SlotSampling(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}  # noqa: RUF012 (transformers' API)
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots = itertools.count()
        # Written by the event loop, read by the generation thread: single dict operations.
        self._rows: dict[
            int, tuple[SamplingParams, torch.Generator | None, LogprobCapture | None]
        ] = {}

    def register(
        self, params: SamplingParams, device: torch.device, capture: LogprobCapture | None = None
    ) -> dict[str, int]:
        """The kwargs to add a request with; greedy requests without a capture need none."""
        if params.greedy and capture is None:
            return {}
        slot = next(self._slots)
        generator = None if params.greedy else make_generator(params.seed, device)
        self._rows[slot] = (params, generator, capture)
        return {SLOT_KWARG: slot}

    def release(self, kwargs: dict[str, int]) -> None:
        if SLOT_KWARG in kwargs:
            self._rows.pop(kwargs[SLOT_KWARG], None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(_NO_SLOT)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        slots = [
            request.state.logit_processor_kwargs.get(SLOT_KWARG, _NO_SLOT)
            for request in requests_with_new_token
        ]
        return torch.tensor(slots, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for row, slot in enumerate(tensor_arg[: scores.size(0)].tolist()):
            entry = self._rows.get(slot) if slot != _NO_SLOT else None
            if entry is not None:
                choose_token(scores[row], *entry)
        return scores


def processor_list(sampling: SlotSampling) -> ContinuousBatchingLogitsProcessorList:
    """The manager's processor list, holding only `sampling` (with its one argument row)."""
    processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([sampling]))
    # The list counts argument rows only for processors it converted itself; ours needs one.
    processors.tensors_required = 1
    return processors
