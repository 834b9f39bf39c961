"""Sentence-transformers pooling read from the model directory and applied to hidden states."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

PoolingMode = Literal["mean", "cls", "max", "mean_sqrt_len"]

_MODE_KEYS: dict[str, PoolingMode] = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one sentence vector, as the model's own files say."""

    mode: PoolingMode = "mean"
    normalize: bool = True
    max_seq_length: int | None = None

    @classmethod
    def from_model_dir(cls, directory: Path) -> PoolingConfig:
        """Read modules.json, the Pooling module's config and sentence_bert_config.json.

        A plain transformers directory (no sentence-transformers files) gets mean pooling with
        normalisation, the common choice for embedding models.
        """
        modules_file = directory / "modules.json"
        if not modules_file.is_file():
            return cls()
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
        mode: PoolingMode = "mean"
        for module in modules:
            if module.get("type", "").endswith(".Pooling"):
                pooling_file = directory / module.get("path", "") / "config.json"
                if pooling_file.is_file():
                    mode = _mode_from_pooling_config(json.loads(pooling_file.read_text()))
        max_seq_length = None
        bert_config = directory / "sentence_bert_config.json"
        if bert_config.is_file():
            max_seq_length = json.loads(bert_config.read_text()).get("max_seq_length")
        return cls(mode=mode, normalize=normalize, max_seq_length=max_seq_length)


def _mode_from_pooling_config(config: dict[str, object]) -> PoolingMode:
    enabled = [mode for key, mode in _MODE_KEYS.items() if config.get(key)]
    if len(enabled) != 1:
        raise ValueError(f"unsupported pooling configuration {config}: exactly one mode must be on")
    return enabled[0]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """(batch, tokens, dim) hidden states and (batch, tokens) mask -> (batch, dim)."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return summed / counts
    return summed / counts.sqrt()


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Unit L2 norm per row (zero rows stay zero)."""
    return torch.nn.functional.normalize(vectors, p=2, dim=1)
