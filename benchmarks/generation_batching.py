"""Continuous against static batching for generation, through the service, in one run.

    python -m benchmarks.generation_batching [--duration-s 20] [--clients 8 32]
    make bench-generation

One `serve run` serves the same causal LM twice, `generation_batching: continuous` and `static`
(16 rows at most, the static batch waiting up to 20 ms to fill, as shipped). Each is driven in
turn by closed-loop clients sending greedy completions whose `max_tokens` is drawn from a range
(8-64 by default): the mixed lengths of real traffic, where a static batch holds its short rows
until its longest ends and a request that arrives meanwhile waits for the whole batch.

The model is `--generation-path`, or a random-weight GPT-2 built on the spot (`--layers`,
`--width`; random weights almost never produce end-of-sequence, so every answer has its
`max_tokens` and tokens/s is exact).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.loadgen import Bounds, ClosedLoop, Target, run_load
from benchmarks.payloads import COMPLETIONS_PATH, make_texts
from benchmarks.report import format_ms
from benchmarks.service_process import free_port, start_serve_run, stop, wait_ready
from benchmarks.stats import summarize

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("continuous", "static")
WARMUP_S = 5.0


@dataclass(frozen=True)
class Row:
    batching: str
    clients: int
    requests_per_s: float
    tokens_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int


def model_name(mode: str) -> str:
    return f"gen-{mode}"


def config_for_modes(
    base: dict[str, Any], model_path: str, num_cpus: float, num_gpus: float = 0.0
) -> dict[str, Any]:
    """`base` (serve_config.yaml) serving only the model at `model_path`, once per mode; with
    `num_gpus` each replica asks Ray for that share of a GPU (`device: auto` then picks CUDA)."""
    config: dict[str, Any] = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    application = config["applications"][0]
    application["args"]["models"] = [
        {
            "name": model_name(mode),
            "task": "generation",
            "path": model_path,
            "device": "auto",
            "generation_batching": mode,
        }
        for mode in MODES
    ]
    ingress = [d for d in application.get("deployments", []) if d["name"] == "Ingress"]
    application["deployments"] = ingress + [
        {
            "name": model_name(mode),
            "max_ongoing_requests": 64,
            "ray_actor_options": {"num_cpus": num_cpus}
            | ({"num_gpus": num_gpus} if num_gpus else {}),
            "user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.02},
        }
        for mode in MODES
    ]
    return config


def completion_bodies(
    model: str, count: int, max_tokens: tuple[int, int], seed: int
) -> tuple[list[bytes], float]:
    """Greedy completion bodies with `max_tokens` uniform in the range, and its mean."""
    draw = random.Random(seed)
    budgets = [draw.randint(*max_tokens) for _ in range(count)]
    bodies = [
        json.dumps({"model": model, "prompt": text, "max_tokens": n, "temperature": 0}).encode()
        for text, n in zip(make_texts(count, seed), budgets, strict=True)
    ]
    return bodies, sum(budgets) / len(budgets)


def build_model(out_dir: Path, layers: int, width: int) -> str:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.tiny_models import build_tiny_gpt2

    heads = max(1, width // 64)
    return str(build_tiny_gpt2(out_dir / "model", layers=layers, width=width, heads=heads))


def measure(
    config_path: Path,
    out_dir: Path,
    clients: Sequence[int],
    max_tokens: tuple[int, int],
    duration_s: float,
    seed: int,
) -> list[Row]:
    port = free_port()
    handle = start_serve_run(config_path, port, log_path=out_dir / "serve_run.log")
    rows: list[Row] = []
    try:
        wait_ready(handle.url, timeout_s=600, handle=handle)
        # Modes alternate at each client count, so a slow phase of the machine hits both.
        for count in clients:
            for mode in MODES:
                bodies, mean_tokens = completion_bodies(model_name(mode), 2_000, max_tokens, seed)
                target = Target(f"{handle.url}{COMPLETIONS_PATH}", bodies)
                bounds = Bounds(duration_s=duration_s + WARMUP_S, request_timeout_s=120)
                record = run_load(target, ClosedLoop(count), bounds, label=f"{mode} c={count}")
                stats = summarize(record, 1, warmup_s=WARMUP_S)
                latency = stats.latency
                rows.append(
                    Row(
                        batching=mode,
                        clients=count,
                        requests_per_s=stats.throughput_rps,
                        tokens_per_s=stats.throughput_rps * mean_tokens,
                        p50_ms=latency.p50_ms if latency else None,
                        p99_ms=latency.p99_ms if latency else None,
                        errors=stats.requests_failed,
                    )
                )
                print(row_line(rows[-1]), file=sys.stderr)
    finally:
        stop(handle)
    return rows


def row_line(row: Row) -> str:
    cells = [
        row.batching,
        str(row.clients),
        f"{row.requests_per_s:.1f}",
        f"{row.tokens_per_s:.0f}",
        format_ms(row.p50_ms),
        format_ms(row.p99_ms),
        str(row.errors),
    ]
    return "| " + " | ".join(cells) + " |"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Continuous against static generation batching")
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured s per load run")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--max-tokens", type=int, nargs=2, default=[8, 64], metavar=("MIN", "MAX"))
    parser.add_argument("--generation-path", help="a causal LM directory (default: random GPT-2)")
    parser.add_argument("--layers", type=int, default=6, help="random GPT-2's layers")
    parser.add_argument("--width", type=int, default=512, help="random GPT-2's hidden size")
    parser.add_argument("--num-cpus", type=float, default=0.5, help="Ray CPUs per replica")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per replica")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    out_dir: Path = args.out or RESULTS_DIR / (
        "generation-batching-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.generation_path or build_model(out_dir, args.layers, args.width)
    base = yaml.safe_load(args.config.read_text())
    config = config_for_modes(base, model_path, args.num_cpus, args.num_gpus)
    config_path = out_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    low, high = args.max_tokens
    rows = measure(config_path, out_dir, args.clients, (low, high), args.duration_s, args.seed)
    (out_dir / "generation_batching.json").write_text(
        json.dumps([asdict(row) for row in rows], indent=2) + "\n"
    )
    print(f"\ngreedy completions, max_tokens uniform in {low}-{high}, closed loop")
    print("| batching | clients | req/s | tokens/s | p50 | p99 | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row_line(row))
    by_key = {(row.batching, row.clients): row for row in rows}
    for count in args.clients:
        static, continuous = by_key[("static", count)], by_key[("continuous", count)]
        if static.requests_per_s > 0:
            ratio = continuous.requests_per_s / static.requests_per_s
            print(f"{count} clients: continuous / static throughput {ratio:.2f}")
    print(f"\nresults: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
