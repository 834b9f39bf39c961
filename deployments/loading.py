"""Where a model's weights come from and how they are placed: path, device, dtype, quantization.

Everything here works on local files only; nothing downloads from a hub.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.length_groups import LengthGrouping
from deployments.quantization_skips import full_precision_modules
from deployments.torchscript import TorchscriptMode

logger = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
QuantizationName = Literal["none", "int8", "nf4", "fp4"]
GenerationBatching = Literal["continuous", "static"]

_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class ModelSource(BaseModel):
    """Where to find a model and how to load it. Exactly one of `path` or `package`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        default=None, description="Local directory holding the Hugging Face model files."
    )
    package: str | None = Field(
        default=None,
        description="An installed Python package that ships a model and exposes get_model_path().",
    )
    device: DeviceName = "auto"
    dtype: DtypeName = "auto"
    quantization: QuantizationName = "none"
    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch intra-op threads on CPU. Ray sets one thread per CPU the replica "
        "reserves (num_cpus), which leaves cores idle when a replica reserves less than it uses.",
    )
    parallel_passes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Forward passes a replica runs at once, each on its own thread, sharing "
        "cpu_threads between them. On CPU cores shared with other processes, 2 passes of 1 "
        "thread keep both cores busy where 1 pass of 2 threads waits for its slower thread.",
    )

    torchscript: TorchscriptMode = Field(
        default="auto",
        description="Run embedding and classification forward passes as a TorchScript trace, "
        "checked against eager PyTorch at start-up (a model that differs stays eager). `auto`: "
        "on for unquantized models on CPU, where it was measured to pay; `on`: on any device.",
    )
    length_grouping: LengthGrouping = Field(
        default="auto",
        description="Embedding and classification: sort a batch's inputs by length and run them "
        "in passes of similar lengths, so short inputs are not padded to the longest. A number "
        "is what one more pass costs in tokens of work (a split happens where it saves more "
        "padding than that); `auto`: 64 on CPU, where it was measured, and one pass per batch "
        "on a GPU; `off`: one pass per batch.",
    )

    generation_batching: GenerationBatching = Field(
        default="continuous",
        description="Generation: `continuous` lets requests join and leave one running batch "
        "between decoding steps (transformers' paged-attention continuous batching); `static` "
        "runs one `generate` per batch, where a request waits for the batch before it.",
    )
    kv_cache_tokens: int | None = Field(
        default=None,
        ge=64,
        description="Generation, continuous batching: tokens of KV cache the replica reserves "
        "for all running requests together, reserved at start-up (default: 16, the default "
        "max_batch_size, x min(context, 2048)).",
    )

    @model_validator(mode="after")
    def _exactly_one_location(self) -> ModelSource:
        if (self.path is None) == (self.package is None):
            raise ValueError("give exactly one of 'path' (a local model directory) or 'package'")
        return self

    @model_validator(mode="after")
    def _no_trace_of_quantized_layers(self) -> ModelSource:
        if self.torchscript == "on" and self.quantization != "none":
            raise ValueError(
                f"torchscript: on cannot trace bitsandbytes layers (quantization: "
                f"{self.quantization}); use torchscript: auto or off with quantization"
            )
        return self

    @model_validator(mode="after")
    def _a_thread_for_every_pass(self) -> ModelSource:
        if self.cpu_threads is not None and self.parallel_passes > self.cpu_threads:
            raise ValueError(
                f"parallel_passes ({self.parallel_passes}) is more than cpu_threads "
                f"({self.cpu_threads}): every pass needs at least one thread"
            )
        return self

    def threads_per_pass(self) -> int | None:
        """torch threads each concurrent pass gets; None leaves Ray's setting alone."""
        if self.cpu_threads is None and self.parallel_passes == 1:
            return None
        total = self.cpu_threads or torch.get_num_threads()
        return max(1, total // self.parallel_passes)

    def resolve_path(self) -> Path:
        """The local directory of the weights; raises ValueError with a fix the user can act on."""
        if self.package is not None:
            try:
                module = importlib.import_module(self.package)
            except ImportError as exc:
                raise ValueError(
                    f"package {self.package!r} is not installed; install it or use 'path'"
                ) from exc
            get_model_path = getattr(module, "get_model_path", None)
            if get_model_path is None:
                raise ValueError(f"package {self.package!r} has no get_model_path()")
            directory = Path(get_model_path())
        else:
            assert self.path is not None
            directory = Path(self.path).expanduser()
        if not (directory / "config.json").is_file():
            raise ValueError(f"{directory} is not a model directory (no config.json in it)")
        return directory


def tokenize(tokenizer: Any, texts: list[str], max_length: int, device: torch.device) -> Any:
    """Padded, truncated model inputs for `texts`, on `device` (a `BatchEncoding`)."""
    return tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
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


def load_pretrained(auto_class: Any, source: ModelSource) -> tuple[Any, torch.device, torch.dtype]:
    """Load weights with `auto_class.from_pretrained`, placed and quantized as `source` says.

    Returns the model in eval mode, its device and its compute dtype.
    """
    directory = source.resolve_path()
    device = pick_device(source.device)
    threads = source.threads_per_pass()
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
