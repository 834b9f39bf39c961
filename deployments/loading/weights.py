"""Where a model's weights come from and how they are placed: path, device, dtype, quantization.

Everything here works on local files only; nothing downloads from a hub.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from deployments.loading.quantization import full_precision_modules, quantization_config
from deployments.loading.source import DeviceName, DtypeName, ModelSource

logger = logging.getLogger(__name__)

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def threads_per_pass(source: ModelSource) -> int | None:
    """torch threads each concurrent pass gets; None leaves Ray's setting alone."""
    if source.cpu_threads is None and source.parallel_passes == 1:
        return None
    total = source.cpu_threads or torch.get_num_threads()
    return max(1, total // source.parallel_passes)


def tokenize(
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    device: torch.device,
    pairs: list[str] | None = None,
) -> Any:
    """Padded, truncated model inputs for `texts` (each with its `pairs` item as the second
    segment, when given), on `device` (a `BatchEncoding`)."""
    return tokenizer(
        texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    ).to(device)


def pick_device(requested: DeviceName) -> torch.device:
    """`auto` means CUDA when this process was given a GPU, else CPU."""
    cuda_available = torch.cuda.is_available()
    if requested == "cuda" and not cuda_available:
        raise RuntimeError(
            "device 'cuda' was requested but no GPU is visible to this replica; "
            "set ray_actor_options.num_gpus or use device 'auto'"
        )
    if requested == "cpu" or not cuda_available:
        return torch.device("cpu")
    return torch.device("cuda")


def pick_dtype(requested: DtypeName, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on a GPU and fp32 on CPU, where half precision is slow or unsupported."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _TORCH_DTYPES[requested]


def load_pretrained(auto_class: Any, source: ModelSource) -> tuple[Any, torch.device, torch.dtype]:
    """Load weights with `auto_class.from_pretrained`, placed and quantized as `source` says.

    Returns the model in eval mode, its device and its compute dtype.
    """
    directory = source.resolve_path()
    device = pick_device(source.device)
    threads = threads_per_pass(source)
    if threads is not None:
        torch.set_num_threads(threads)
    dtype = pick_dtype(source.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    skips = None
    if source.quantization != "none":
        skips = full_precision_modules(auto_class, directory, source.quantization, device)
    bnb_config = quantization_config(source.quantization, dtype, skips)
    if bnb_config is not None:
        kwargs["quantization_config"] = bnb_config
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = auto_class.from_pretrained(str(directory), **kwargs)
    if bnb_config is None:
        model = model.to(device)
    model.eval()
    logger.info(
        "loaded %s on %s as %s (quantization %s)", directory, device, dtype, source.quantization
    )
    return model, device, dtype


def footprint_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers, as loaded (quantized sizes included)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the model as trained; bitsandbytes 4-bit stores two weights per byte."""
    total = 0
    for param in model.parameters():
        quant_state = getattr(param, "quant_state", None)
        total += quant_state.shape.numel() if quant_state is not None else param.numel()
    return total
