"""Per-request sampling inside transformers' continuous batching, with the same semantics as
`PerRowSampling` in a static batch: each sampled request its own temperature, top_p and RNG.

Continuous batching builds its logits processors from one generation config and samples every
row with one shared RNG, so a seed could not make a request reproducible. Instead each sampled
request carries a slot number in its `logit_processor_kwargs`; this processor looks the slot up,
samples that row itself and pins the choice, and the loop's greedy argmax takes it. Greedy
requests carry no slot and are left untouched.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from transformers import LogitsProcessorList
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)

from deployments.generation_types import SamplingParams
from deployments.sampling import make_generator, pin_sampled_token

SLOT_KWARG = "sampling_slot"
_NO_SLOT = -1


class SlotSampling(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}  # noqa: RUF012 (transformers' API)
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots = itertools.count()
        # Written by the event loop, read by the generation thread: single dict operations.
        self._rows: dict[int, tuple[SamplingParams, torch.Generator]] = {}

    def register(self, params: SamplingParams, device: torch.device) -> dict[str, int]:
        """The kwargs to add a sampled request with; greedy requests need none."""
        if params.greedy:
            return {}
        slot = next(self._slots)
        self._rows[slot] = (params, make_generator(params.seed, device))
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
                pin_sampled_token(scores[row], *entry)
        return scores


def processor_list(sampling: SlotSampling) -> ContinuousBatchingLogitsProcessorList:
    """The manager's processor list, holding only `sampling` (with its one argument row)."""
    processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([sampling]))
    # The list counts argument rows only for processors it converted itself; ours needs one.
    processors.tensors_required = 1
    return processors
