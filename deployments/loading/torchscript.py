"""An encoder's forward pass as TorchScript, used only once it has matched eager PyTorch.

`torch.jit.trace` records the forward pass once; the trace then runs in C++ and does not take
Python's GIL between operators. That matters in a replica: its event loop (Serve's request
handling) and, with `parallel_passes`, a second forward pass compete for the GIL with every
module call of an eager pass. Measured on all-MiniLM-L6-v2, 2-core CPU, one torch thread per
pass: a pass of 1-32 inputs takes 8-15% less time alone; two passes beside a Python thread that
holds the GIL 40% of the time do 1.25-1.7x the inputs/s of eager; the service answered 12-18%
more single-sentence requests/s at 32 clients with 10% less CPU per request (3 paired runs).

A trace is shape-generic only if the model has no Python control flow on tensor values, so it is
checked: on probe batches of other sizes and lengths (with padding) its outputs must match
eager's, or the replica logs why and stays eager.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deployments.loading.source import TorchscriptMode

logger = logging.getLogger("ray.serve")

# Model inputs (the tokenizer's tensors, on the model's device) -> the named output tensor.
Forward = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
Tokenize = Callable[[list[str]], Mapping[str, torch.Tensor]]

# Traced on the first batch, checked on the others: one input alone, padding, a longer text.
PROBE_BATCHES: tuple[tuple[str, ...], ...] = (
    ("A short one.", "A longer sentence, so that the batch carries some padding in it."),
    ("One text alone.",),
    (
        "Three",
        "texts of rather different lengths",
        "and the last one runs on for a while, long enough to need many more positions "
        "than the first two together, which is the point of it.",
    ),
)


def wants_torchscript(mode: TorchscriptMode, device: torch.device, quantization: str) -> bool:
    """`auto` traces where it was measured to pay: unquantized models on CPU."""
    if mode == "auto":
        return device.type == "cpu" and quantization == "none"
    return mode == "on"


def eager_forward(model: nn.Module, output: str) -> Forward:
    return lambda encoded: getattr(model(**encoded), output)


def _output(result: Any, output: str) -> torch.Tensor:
    # A trace returns the model's output as a dict (strict=False) or, for some models, a tuple
    # whose first item is the main output.
    if isinstance(result, Mapping):
        return result[output]  # type: ignore[no-any-return]
    return result[0]  # type: ignore[no-any-return]


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol): the same kernels give the same fp32 numbers; half precision is looser."""
    return (1e-3, 1e-4) if dtype == torch.float32 else (2e-2, 2e-3)


@torch.inference_mode()
def traced_forward(
    model: nn.Module,
    tokenize: Tokenize,
    output: str,
    probes: Sequence[Sequence[str]] = PROBE_BATCHES,
) -> Forward | None:
    """`model` traced on the first probe batch, or None if tracing fails or any probe differs."""
    eager = eager_forward(model, output)
    example = dict(tokenize(list(probes[0])))
    try:
        with warnings.catch_warnings():
            # The tracer warns about every shape read it records; the probes below are the check.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(
                model, example_kwarg_inputs=example, strict=False, check_trace=False
            )
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: stay eager
        logger.warning("TorchScript: tracing failed (%s); running eager PyTorch", exc)
        return None

    def forward(encoded: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return _output(traced(**encoded), output)

    for texts in probes:
        encoded = tokenize(list(texts))
        expected = eager(encoded)
        try:
            got = forward(encoded)
        except Exception as exc:  # noqa: BLE001 - a trace that cannot run a probe is not used
            logger.warning("TorchScript: the trace failed on a probe (%s); running eager", exc)
            return None
        rtol, atol = _tolerance(expected.dtype)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol, atol):
            logger.warning(
                "TorchScript: the trace differs from eager on %d probe texts (the model has "
                "input-dependent code); running eager PyTorch",
                len(texts),
            )
            return None
    return forward


def choose_forward(
    model: nn.Module,
    tokenize: Tokenize,
    output: str,
    mode: TorchscriptMode,
    device: torch.device,
    quantization: str,
) -> tuple[Forward, str]:
    """The forward pass to serve with and its name for `/v1/models` (`torchscript`, `eager`)."""
    if wants_torchscript(mode, device, quantization):
        traced = traced_forward(model, tokenize, output)
        if traced is not None:
            return traced, "torchscript"
    return eager_forward(model, output), "eager"
