"""Token logprobs: log-softmax of the model's raw logits, before temperature and top_p (what a
plain forward of the same weights gives, and what evaluation harnesses compare against).

Generated tokens are scored as they are chosen: the sampling processors (sampling.py) see each
row's raw logits first and hand them to the row's `LogprobCapture`, on the generation thread,
before the token reaches the event loop; only rows that asked pay for it. Prompt tokens (echo)
take one forward over the prompts that asked, right-padded so no position moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from deployments.contract import TokenLogprob


@dataclass(frozen=True)
class StepLogprobs:
    """One position, in token ids: the chosen token's logprob and the `top` alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def step_logprobs(logprobs: torch.Tensor, token_id: int, top_k: int) -> StepLogprobs:
    """From one position's 1-D log-softmax row."""
    top: tuple[tuple[int, float], ...] = ()
    if top_k > 0:
        values, ids = torch.topk(logprobs, min(top_k, logprobs.numel()))
        top = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return StepLogprobs(token_id, float(logprobs[token_id]), top)


class LogprobCapture:
    """One row's generated tokens, scored. `record` runs on the generation thread, one call per
    generated token in order; the row reads entry k once its k-th token has arrived."""

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.steps: list[StepLogprobs] = []

    def record(self, raw_scores: torch.Tensor, token_id: int) -> None:
        logprobs = torch.log_softmax(raw_scores.float(), dim=-1)
        self.steps.append(step_logprobs(logprobs, token_id, self.top_k))


def token_text(tokenizer: Any, token_id: int) -> str:
    """One token as text; special tokens (eos) by name, as they are not part of the text."""
    text: str = tokenizer.decode([token_id])
    return text


def describe(tokenizer: Any, step: StepLogprobs) -> TokenLogprob:
    return TokenLogprob(
        token=token_text(tokenizer, step.token_id),
        logprob=step.logprob,
        top=tuple((token_text(tokenizer, i), value) for i, value in step.top),
    )


# Logits of one scoring forward are (prompts, widest prompt, vocabulary) floats: passes hold at
# most this many bytes of them (a prompt longer than that still runs, alone).
SCORING_LOGITS_BYTES = 1 << 30


def scoring_passes(lengths: Sequence[int], vocab_size: int) -> list[list[int]]:
    """Indices of prompts (in order) grouped so each pass's padded logits fit the budget."""
    budget_tokens = max(1, SCORING_LOGITS_BYTES // (4 * vocab_size))
    passes: list[list[int]] = []
    widest = 0
    for index, length in enumerate(lengths):
        if passes and max(widest, length) * (len(passes[-1]) + 1) <= budget_tokens:
            passes[-1].append(index)
            widest = max(widest, length)
        else:
            passes.append([index])
            widest = length
    return passes


@torch.inference_mode()
def score_prompts(
    model: Any, tokenizer: Any, pad_id: int, prompts: Sequence[tuple[Sequence[int], int]]
) -> list[tuple[TokenLogprob, ...]]:
    """Every token's logprob given the tokens before it (the first has none), for each
    `(prompt ids, top alternatives)`, in as few forwards as the logits budget allows."""
    scored: list[tuple[TokenLogprob, ...]] = []
    vocab_size = model.get_output_embeddings().weight.shape[0]
    for members in scoring_passes([len(ids) for ids, _ in prompts], vocab_size):
        scored.extend(_score_pass(model, tokenizer, pad_id, [prompts[i] for i in members]))
    return scored


def _score_pass(
    model: Any, tokenizer: Any, pad_id: int, prompts: Sequence[tuple[Sequence[int], int]]
) -> list[tuple[TokenLogprob, ...]]:
    """One forward. Right padding: each row's positions and attention stay its own."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (ids, _) in enumerate(prompts):
        input_ids[row, : len(ids)] = torch.tensor(list(ids))
        attention_mask[row, : len(ids)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    scored: list[tuple[TokenLogprob, ...]] = []
    for row, (ids, top_k) in enumerate(prompts):
        # Position i's logits predict token i + 1.
        logprobs = torch.log_softmax(logits[row, : len(ids) - 1].float(), dim=-1).cpu()
        first = TokenLogprob(token_text(tokenizer, ids[0]), None)
        rest = (
            describe(tokenizer, step_logprobs(logprobs[i], ids[i + 1], top_k))
            for i in range(len(ids) - 1)
        )
        scored.append((first, *rest))
    return scored
