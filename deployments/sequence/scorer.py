"""A sequence-classification head run over batches: what classification and reranking share.

No Ray here. The model (`AutoModelForSequenceClassification`) and its tokenizer load as the
source says; passes are grouped by length and traced where that pays. Subclasses say how
their inputs become model inputs and what the logits mean.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding

from deployments.batching.length_groups import forward_by_length, pass_overhead_tokens
from deployments.loading.source import ModelSource
from deployments.loading.torchscript import choose_forward
from deployments.loading.weights import footprint_bytes, load_pretrained, parameter_count


class SequenceScorer:
    """Inputs longer than the model's maximum are truncated to it."""

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        directory = source.resolve_path()
        self.source = source
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model, self.device, self.dtype = load_pretrained(
            AutoModelForSequenceClassification, source
        )
        limits = [
            getattr(self.model.config, "max_position_embeddings", None),
            _sane(self.tokenizer.model_max_length),
            max_input_tokens,
        ]
        self.max_input_tokens = min(limit for limit in limits if limit)
        self._forward, self.execution = choose_forward(
            self.model,
            self._probe_inputs,
            "logits",
            source.torchscript,
            self.device,
            source.quantization,
        )
        self._pass_overhead_tokens = pass_overhead_tokens(source.length_grouping, self.device)

    def _probe_inputs(self, texts: list[str]) -> BatchEncoding:
        """Model inputs shaped like the subclass's own, built from `texts`: what the
        TorchScript trace is recorded and checked on."""
        raise NotImplementedError

    def _logits(self, encoded: BatchEncoding) -> tuple[torch.Tensor, list[int]]:
        """(rows, labels) float logits in length-grouped passes, and each row's token count."""
        logits = forward_by_length(
            encoded, self._pass_logits, self._pass_overhead_tokens, self.tokenizer.padding_side
        )
        return logits, encoded["attention_mask"].sum(dim=1).tolist()

    def _pass_logits(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(encoded).float()

    def describe(self) -> dict[str, object]:
        return {
            "max_input_tokens": self.max_input_tokens,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": self.source.quantization,
            "execution": self.execution,
            "pass_overhead_tokens": self._pass_overhead_tokens,
            "parameters": parameter_count(self.model),
            "memory_bytes": footprint_bytes(self.model),
        }


def _sane(model_max_length: int) -> int | None:
    """Tokenizers without a limit report a huge sentinel (1e30); treat that as none."""
    return model_max_length if model_max_length < 1_000_000 else None
