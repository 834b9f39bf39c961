"""Quantized loading, checked: which layers stay in full precision, the built-in probe inputs,
and how closely the quantized model's answers follow its unquantized self.

The reference loads first, answers the probes and is freed before the quantized model loads, so
peak memory is the larger of the two, not their sum. Unquantized models skip all of this.

Two kinds of layer stay unquantized:
- the output head (the output embeddings, and the module owning the model's last parameter, e.g.
  a classifier): tiny, and the layer whose error reaches the answer undamped. transformers means
  to skip the latter by default but names it `classifier.bias`, which matches no module;
- on CPU with 4-bit weights, every linear layer whose output size is not a multiple of 32:
  bitsandbytes' CPU 4-bit kernel packs weights 32 output rows at a time and asserts on others.

Agreement functions take the reference's outputs first and return named figures (higher
agreement and cosine are better, a lower probability difference is better).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoConfig
from transformers.pytorch_utils import Conv1D

from deployments.loading.source import ModelSource, QuantizationName

# Built-in probe inputs for checking a quantized model against its unquantized self.
PROBE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "I absolutely loved this film; the acting was wonderful.",
    "This was the worst customer service I have ever had.",
    "Ray Serve batches requests so the accelerator stays busy.",
    "Quantization stores weights in fewer bits to save memory.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "def add(a, b):\n    return a + b",
)

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class QuantizationAgreement:
    """A quantized model's figures against its full-precision reference on the probe inputs."""

    quantization: str
    reference_dtype: str
    probes: int
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "quantization": self.quantization,
            "reference_dtype": self.reference_dtype,
            "probes": self.probes,
            **self.metrics,
        }


@dataclass(frozen=True)
class CheckedModel(Generic[ModelT]):
    model: ModelT
    agreement: QuantizationAgreement | None


def load_checked(
    source: ModelSource,
    build: Callable[[ModelSource], ModelT],
    probe: Callable[[ModelT, tuple[str, ...]], OutputT],
    compare: Callable[[OutputT, OutputT], dict[str, float]],
    probes: tuple[str, ...] = PROBE_TEXTS,
) -> CheckedModel[ModelT]:
    """`build(source)`, and for a quantized source its agreement with the unquantized build."""
    if source.quantization == "none":
        return CheckedModel(build(source), None)
    reference = build(source.model_copy(update={"quantization": "none"}))
    expected = probe(reference, probes)
    reference_dtype = str(getattr(reference, "dtype", "unknown")).removeprefix("torch.")
    del reference
    _release_memory()
    model = build(source)
    metrics = compare(expected, probe(model, probes))
    agreement = QuantizationAgreement(source.quantization, reference_dtype, len(probes), metrics)
    logger.info(
        "quantization %s agrees with its %s reference on %d probes: %s",
        source.quantization,
        reference_dtype,
        len(probes),
        ", ".join(f"{name}={value:.4f}" for name, value in metrics.items()),
    )
    return CheckedModel(model, agreement)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def embedding_agreement(
    reference: npt.NDArray[np.float32], quantized: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Cosine similarity of each probe's vector to the reference's: mean and worst."""
    cosines = _row_cosines(torch.from_numpy(reference), torch.from_numpy(quantized))
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min())}


def logits_agreement(reference: torch.Tensor, quantized: torch.Tensor) -> dict[str, float]:
    """Next-token logits at every probe position (rows): same top-1 token, and logit cosine."""
    same_top1 = reference.argmax(dim=-1) == quantized.argmax(dim=-1)
    cosines = _row_cosines(reference, quantized)
    return {
        "top1_agreement": float(same_top1.float().mean()),
        "mean_logit_cosine": float(cosines.mean()),
        "positions": float(reference.shape[0]),
    }


def classification_agreement(
    reference: npt.NDArray[np.float32], quantized: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Class probabilities per probe (rows): same predicted label, and largest probability gap."""
    same_label = reference.argmax(axis=1) == quantized.argmax(axis=1)
    return {
        "label_agreement": float(same_label.mean()),
        "max_prob_diff": float(np.abs(reference - quantized).max()),
    }


def relevance_agreement(
    reference: npt.NDArray[np.float32], quantized: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Relevance scores of the probe pairs: same best document, same order, largest score gap."""
    return {
        "top1_agreement": float(reference.argmax() == quantized.argmax()),
        "same_order": float((reference.argsort() == quantized.argsort()).all()),
        "max_score_diff": float(np.abs(reference - quantized).max()),
    }


def _row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def quantization_config(
    quantization: QuantizationName,
    compute_dtype: torch.dtype,
    skip_modules: list[str] | None = None,
) -> Any:
    """A bitsandbytes config for transformers' from_pretrained, or None for full precision.

    `skip_modules` stay in full precision (see quantization_skips.py for which and why).
    """
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip_modules,
    )
