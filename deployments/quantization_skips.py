"""Which layers bitsandbytes must leave in full precision, read off the model's meta skeleton.

Two kinds stay unquantized:
- the output head (the output embeddings, and the module owning the model's last parameter, e.g.
  a classifier): tiny, and the layer whose error reaches the answer undamped. transformers means
  to skip the latter by default but names it `classifier.bias`, which matches no module;
- on CPU with 4-bit weights, every linear layer whose output size is not a multiple of 32:
  bitsandbytes' CPU 4-bit kernel packs weights 32 output rows at a time and asserts on others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig
from transformers.pytorch_utils import Conv1D

CPU_4BIT_ROW_BLOCK = 32


def full_precision_modules(
    auto_class: Any, directory: Path, quantization: str, device: torch.device
) -> list[str]:
    """Module names to pass as `llm_int8_skip_modules` (it applies to 8-bit and 4-bit alike)."""
    config = AutoConfig.from_pretrained(str(directory))
    with torch.device("meta"):
        skeleton = auto_class.from_config(config)
    names = head_modules(skeleton)
    if quantization in ("nf4", "fp4") and device.type == "cpu":
        names |= {
            name
            for name, module in skeleton.named_modules()
            if (rows := output_rows(module)) is not None and rows % CPU_4BIT_ROW_BLOCK
        }
    return sorted(names)


def head_modules(model: torch.nn.Module) -> set[str]:
    """The output embeddings (if any) and the module that owns the last parameter."""
    names: set[str] = set()
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if get_output is not None else None
    if output is not None:
        names |= {name for name, module in model.named_modules() if module is output}
    parameters = list(model.named_parameters())
    if parameters:
        owner = parameters[-1][0].rpartition(".")[0]
        if owner:
            names.add(owner)
    return names


def output_rows(module: torch.nn.Module) -> int | None:
    """Output features of a layer bitsandbytes would replace, else None."""
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):  # GPT-2's transposed linear layer
        return int(module.nf)
    return None
