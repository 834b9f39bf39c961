"""The causal language model itself: requests in, one batched `generate`, text out. No Ray here.

A batch is split only where left padding would run a row past the model's context: left padding
widens every prompt to the longest, and `generate` runs the widest row for the largest
max_tokens, so a batch fits when `longest prompt + largest max_tokens <= context`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteriaList,
)

from deployments.contract import GenerationChunk, GenerationRequest, InputRejected, TokenLogprob
from deployments.generation.chat_prompt import has_chat_template, render_chat
from deployments.generation.logprobs import score_prompts
from deployments.generation.progress import BatchProgress, Emit, GenerationJob, RowProgress
from deployments.generation.sampling import PerRowSampling
from deployments.loading.quantization import CheckedModel, load_checked, logits_agreement
from deployments.loading.source import ModelSource
from deployments.loading.weights import footprint_bytes, load_pretrained, parameter_count

OnFinish = Callable[[RowProgress], None]
_FALLBACK_CONTEXT_TOKENS = 2048


class GenerationModel:
    """A causal LM and its tokenizer. Prompts are left-padded into one `generate` per batch."""

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        directory = source.resolve_path()
        self.source = source
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model, self.device, self.dtype = load_pretrained(AutoModelForCausalLM, source)
        self.context_tokens = _context_tokens(self.model.config)
        self.max_input_tokens = min(max_input_tokens or self.context_tokens, self.context_tokens)
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = int(pad_id) if pad_id is not None else min(self.eos_ids, default=0)
        # Prompt scoring (echo) runs beside the continuous batching loop, which changes state on
        # the modules it runs: a forward on them meanwhile read other logits (off by up to 7
        # nats on the tiny GPT-2). Its own module tree over the same weights costs no memory.
        self.scorer = shared_weights_copy(self.model)

    def prepare(self, request: GenerationRequest, cache_tokens: int | None = None) -> GenerationJob:
        """Tokenize and check one request against the model's limits (InputRejected if not).

        `cache_tokens`: the most tokens (prompt and completion) one request may hold in the
        replica's KV cache, when that is less than the context.
        """
        param = "messages" if request.messages is not None else "prompt"
        prompt_ids = self.prompt_ids(request)
        if not prompt_ids:
            raise InputRejected(f"'{param}' has no tokens; send some text.", param=param)
        if len(prompt_ids) > self.max_input_tokens:
            raise InputRejected(
                f"The prompt has {len(prompt_ids)} tokens; this model takes at most "
                f"{self.max_input_tokens}.",
                param=param,
            )
        max_tokens = request.max_tokens
        limit = self.context_tokens
        what = f"This model's maximum context length is {limit} tokens."
        if cache_tokens is not None and cache_tokens < limit:
            limit = cache_tokens
            what = f"This replica's KV cache holds {limit} tokens (kv_cache_tokens)."
        room = limit - len(prompt_ids)
        if max_tokens > room:
            if not request.max_tokens_is_default or room < 1:
                raise InputRejected(
                    f"{what} However, you requested {len(prompt_ids) + max_tokens} tokens "
                    f"({len(prompt_ids)} in the prompt, {max_tokens} in the completion). "
                    "Please reduce the prompt or max_tokens.",
                    param="max_tokens",
                )
            max_tokens = room
        return GenerationJob(
            request_id=request.request_id,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            sampling=request.sampling,
            stop=request.stop,
            logprobs=request.logprobs,
        )

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            return self._checked_token_ids(request.prompt_token_ids)
        if request.messages is not None:
            text = render_chat(self.tokenizer, request.messages)
            # A chat template writes its own special tokens (BOS included).
            special = not has_chat_template(self.tokenizer)
        else:
            text, special = request.prompt or "", True
        ids: list[int] = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id)]
        return ids

    def _checked_token_ids(self, ids: Sequence[int]) -> list[int]:
        vocab = len(self.tokenizer)
        for token_id in ids:
            if not 0 <= token_id < vocab:
                raise InputRejected(
                    f"'prompt' holds token id {token_id}; this model's token ids run from 0 to "
                    f"{vocab - 1}.",
                    param="prompt",
                )
        return list(ids)

    def prompt_text(self, request: GenerationRequest, prompt_ids: Sequence[int]) -> str:
        """The prompt as an echo shows it: as sent, or decoded from the ids that were sent."""
        if request.prompt is not None:
            return request.prompt
        return str(self.tokenizer.decode(list(prompt_ids)))

    def score_prompts(self, jobs: list[GenerationJob]) -> list[tuple[TokenLogprob, ...]]:
        """Each job's prompt tokens with their logprobs (echo), in one forward."""
        prompts = [(job.prompt_ids, job.logprobs or 0) for job in jobs]
        return score_prompts(self.scorer, self.tokenizer, self.pad_id, prompts)

    @torch.inference_mode()
    def run_batch(
        self, jobs: Sequence[GenerationJob], emit: Emit, on_finish: OnFinish | None = None
    ) -> list[RowProgress]:
        """Generate for every job; `emit` gets each step's chunks, one slot per job (or None).

        One `generate` call serves the whole batch unless left padding would push the longest
        row past the context; then the jobs run in as few context-fitting groups as needed.
        """
        rows = [RowProgress(job, self.tokenizer, self.eos_ids) for job in jobs]
        groups = plan_groups(
            [(len(job.prompt_ids), job.max_tokens) for job in jobs], self.context_tokens
        )
        for group in groups:
            self._generate(rows, group, emit, on_finish)
        return rows

    def _generate(
        self,
        rows: Sequence[RowProgress],
        group: Sequence[int],
        emit: Emit,
        on_finish: OnFinish | None,
    ) -> None:
        def emit_group(updates: list[GenerationChunk | None]) -> None:
            full: list[GenerationChunk | None] = [None] * len(rows)
            for index, update in zip(group, updates, strict=True):
                full[index] = update
            emit(full)

        members = [rows[index] for index in group]
        input_ids, attention_mask = self._left_pad([row.job.prompt_ids for row in members])
        progress = BatchProgress(members, emit_group, on_finish)
        self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._generation_config(max(row.job.max_tokens for row in members)),
            logits_processor=LogitsProcessorList(
                [PerRowSampling([r.job.sampling for r in members], [r.capture for r in members])]
            ),
            stopping_criteria=StoppingCriteriaList([progress]),
        )
        progress.end()

    def _left_pad(self, prompts: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        # Greedy by construction: PerRowSampling already picked each sampled row's token.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(self.eos_ids) or None,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    @torch.inference_mode()
    def next_token_logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Logits at every real position of `texts` (teacher-forced), as (positions, vocab)."""
        prompts = [self.tokenizer(text)["input_ids"][: self.max_input_tokens] for text in texts]
        input_ids, attention_mask = self._left_pad(prompts)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        positions: torch.Tensor = logits[attention_mask.bool()].float().cpu()
        return positions

    def describe(self) -> dict[str, object]:
        return {
            "context_tokens": self.context_tokens,
            "max_input_tokens": self.max_input_tokens,
            "chat_template": "tokenizer" if has_chat_template(self.tokenizer) else "plain",
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": self.source.quantization,
            "parameters": parameter_count(self.model),
            "memory_bytes": footprint_bytes(self.model),
        }


def shared_weights_copy(model: Any) -> Any:
    """A second module tree whose parameters and buffers are the first one's tensors."""
    shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, shared)


def _context_tokens(config: Any) -> int:
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return _FALLBACK_CONTEXT_TOKENS


def _eos_ids(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured is not None:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


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


def load(source: ModelSource, max_input_tokens: int | None = None) -> CheckedModel[GenerationModel]:
    """The model as `source` says, checked against its unquantized self when quantized."""
    return load_checked(
        source,
        build=lambda s: GenerationModel(s, max_input_tokens),
        probe=lambda model, texts: model.next_token_logits(texts),
        compare=logits_agreement,
    )
