"""The generation ceiling: plain `model.generate` on the benchmark's prompts, no service.

The same prompts the completions load sends, left-padded into batches of the load's
concurrency (the most requests the service can batch together under that load), greedy, the
same `max_tokens`. The service's completions figures are printed as ratios to this: requests/s
over requests/s (both greedy on the same prompts, so both produce the same completions), and
p50 over the time of one `generate` of a single prompt. On CUDA the model runs in float16, as a
replica with `dtype: auto` does.

    python -m benchmarks.generation_ceiling --model-path DIR --json-out generation_ceiling.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.ceiling import (
    median_latency_ms,
    quiet_offline_child,
    run_child,
    whole_batches,
    write_result,
)
from benchmarks.payloads import make_texts

PROMPTS = 512


@dataclass(frozen=True)
class GenerationCeiling:
    model_path: str
    device: str
    batch_size: int
    max_tokens: int
    requests_per_s: float
    completion_tokens_per_s: float
    # Median time of one `generate` on a single prompt.
    single_request_ms: float
    measured_at: str

    @property
    def step_ms(self) -> float:
        """One decoding step of the whole batch, prefill shared out: the in-process loop's own
        inter-token time, against which a stream's token gaps are read."""
        return self.batch_size / self.requests_per_s / self.max_tokens * 1e3


class _Generator:
    """Left-padded greedy `generate` over batches of prompts; counts the tokens it produced."""

    def __init__(self, model_path: str, device: str, max_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.float16 if device == "cuda" else torch.float32
        # Any: transformers' stubs type `.to` on a loaded model as the class decorator's call.
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model = model.to(device).eval()
        self.device = device
        self.max_tokens = max_tokens

    def __call__(self, prompts: list[str]) -> int:
        """Completion tokens generated for `prompts`, up to each row's first end-of-sequence."""
        with self._torch.inference_mode():
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
            output = self.model.generate(
                **encoded,
                max_new_tokens=self.max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[:, encoded["input_ids"].shape[1] :].tolist()
        eos = self.tokenizer.eos_token_id
        return sum(row.index(eos) + 1 if eos in row else len(row) for row in new)


def measure(
    model_path: str,
    prompts: Sequence[str],
    batch_size: int,
    max_tokens: int = 16,
    duration_s: float = 10.0,
    device: str = "cpu",
) -> GenerationCeiling:
    generate = _Generator(model_path, device, max_tokens)
    batches = whole_batches(prompts, batch_size)
    generate(batches[0])  # the first call pays for lazy initialisation
    requests = tokens = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < duration_s or requests == 0:
        batch = batches[(requests // batch_size) % len(batches)]
        tokens += generate(batch)
        requests += len(batch)
    return GenerationCeiling(
        model_path=model_path,
        device=device,
        batch_size=batch_size,
        max_tokens=max_tokens,
        requests_per_s=requests / elapsed,
        completion_tokens_per_s=tokens / elapsed,
        single_request_ms=median_latency_ms(generate, prompts, 1),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def measure_in_subprocess(
    json_out: Path,
    model_path: str,
    seed: int,
    batch_size: int,
    max_tokens: int = 16,
    words_per_input: int = 16,
    duration_s: float = 10.0,
    device: str = "cpu",
    timeout_s: float = 900.0,
) -> GenerationCeiling:
    """Run `measure` in a child Python (torch never lives in the load generator)."""
    options = ["--model-path", model_path, "--seed", str(seed), "--batch-size", str(batch_size)]
    options += ["--max-tokens", str(max_tokens), "--words-per-input", str(words_per_input)]
    options += ["--duration-s", str(duration_s), "--device", device]
    return GenerationCeiling(
        **run_child("benchmarks.generation_ceiling", options, json_out, timeout_s)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process generation ceiling")
    parser.add_argument("--model-path", required=True, help="a local causal LM directory")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--words-per-input", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: float16")
    args = parser.parse_args(argv)
    quiet_offline_child()
    prompts = make_texts(PROMPTS, seed=args.seed, words_per_text=args.words_per_input)
    result = measure(
        args.model_path, prompts, args.batch_size, args.max_tokens, args.duration_s, args.device
    )
    write_result(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
