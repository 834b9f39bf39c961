"""The model block of serve_config.yaml: where a model's weights are and how a replica places
them (device, dtype, quantization, threads, passes). Torch-free: the ingress validates it at deploy
time and hands it to the replica across the Ray handle; deployments/loading/weights.py applies it.

Everything works on local files only; nothing downloads from a hub.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "float16", "bfloat16"]
QuantizationName = Literal["none", "int8", "nf4", "fp4"]
GenerationBatching = Literal["continuous", "static"]
TorchscriptMode = Literal["auto", "on", "off"]
LengthGrouping = Literal["auto", "off"] | Annotated[int, Field(ge=1, le=1_000_000)]


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
    stream_interval: int = Field(
        default=1,
        ge=1,
        description="Generation, streamed requests: completion tokens per chunk after the first. "
        "1 sends what each decoding step made at once; N holds a choice's tokens until N more "
        "are made (or it ends), so a stream costs about N times fewer chunks on its way out "
        "(replica, ingress, HAProxy) and its tokens arrive in bursts of N. The first chunk is "
        "never held.",
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
