"""The embedding model itself: texts in, unit vectors and token counts out. No Ray here."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, BatchEncoding

from deployments.batching.length_groups import forward_by_length, pass_overhead_tokens
from deployments.contract import EmbeddingBatch
from deployments.embedding.pooling import PoolingConfig, normalize, pool
from deployments.loading.quantization import CheckedModel, embedding_agreement, load_checked
from deployments.loading.source import ModelSource
from deployments.loading.torchscript import choose_forward
from deployments.loading.weights import footprint_bytes, load_pretrained, parameter_count, tokenize


class EmbeddingModel:
    """An encoder with the pooling and normalisation that its sentence-transformers files name.

    Inputs longer than the model's maximum are truncated to it.
    """

    def __init__(self, source: ModelSource, max_input_tokens: int | None = None) -> None:
        directory = source.resolve_path()
        self.source = source
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model, self.device, self.dtype = load_pretrained(AutoModel, source)
        self.pooling = PoolingConfig.from_model_dir(directory)
        limits = [
            self.pooling.max_seq_length,
            self.model.config.max_position_embeddings,
            max_input_tokens,
        ]
        self.max_input_tokens = min(limit for limit in limits if limit)
        self.dimensions = int(self.model.config.hidden_size)
        self._forward, self.execution = choose_forward(
            self.model,
            self._tokenize,
            "last_hidden_state",
            source.torchscript,
            self.device,
            source.quantization,
        )
        self._pass_overhead_tokens = pass_overhead_tokens(source.length_grouping, self.device)

    def _tokenize(self, texts: list[str]) -> BatchEncoding:
        encoded: BatchEncoding = tokenize(self.tokenizer, texts, self.max_input_tokens, self.device)
        return encoded

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> EmbeddingBatch:
        encoded = self._tokenize(texts)
        vectors = forward_by_length(
            encoded, self._pooled, self._pass_overhead_tokens, self.tokenizer.padding_side
        )
        if self.pooling.normalize:
            vectors = normalize(vectors)
        token_counts = encoded["attention_mask"].sum(dim=1).tolist()
        return EmbeddingBatch(
            vectors=vectors.cpu().numpy().astype(np.float32), token_counts=token_counts
        )

    def _pooled(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._forward(encoded)
        return pool(hidden.float(), encoded["attention_mask"], self.pooling.mode)

    def describe(self) -> dict[str, object]:
        return {
            "dimensions": self.dimensions,
            "max_input_tokens": self.max_input_tokens,
            "pooling": self.pooling.mode,
            "normalized": self.pooling.normalize,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": self.source.quantization,
            "execution": self.execution,
            "pass_overhead_tokens": self._pass_overhead_tokens,
            "parameters": parameter_count(self.model),
            "memory_bytes": footprint_bytes(self.model),
        }


def load(source: ModelSource, max_input_tokens: int | None = None) -> CheckedModel[EmbeddingModel]:
    """The model as `source` says, checked against its unquantized self when quantized."""
    return load_checked(
        source,
        build=lambda s: EmbeddingModel(s, max_input_tokens),
        probe=lambda model, texts: model.encode(list(texts)).vectors,
        compare=embedding_agreement,
    )
