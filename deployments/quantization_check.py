"""Load a quantized model after measuring its unquantized self on the built-in probes.

The reference loads first, answers the probes and is freed before the quantized model loads, so
peak memory is the larger of the two, not their sum. Unquantized models skip all of this.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from deployments.loading import ModelSource
from deployments.probes import PROBE_TEXTS

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
