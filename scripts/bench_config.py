"""A Serve config for benchmarking generation (and reranking) beside embeddings: a copy of one
config plus a generation model (a real one from --generation-path, else a tiny random-weight
GPT-2 built on the spot, which measures the service's overhead around `generate` rather than a
model's speed) and, with --rerank, a cross-encoder (--rerank-path, else a tiny random one).

    python scripts/bench_config.py --base serve_config.gpu.yaml --out DIR [--num-gpus 0.25]
    python scripts/bench_config.py --out DIR --rerank   # then make bench BENCH_ARGS="--config
        DIR/bench_config.yaml --rerank-model bench-reranker"

Prints the new config's path; the models are served as `bench-generator` and `bench-reranker`.
With --num-gpus each added replica asks Ray for that share of a GPU (`device: auto` then picks
CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GENERATOR = "bench-generator"
RERANKER = "bench-reranker"


def with_model(
    base: dict[str, Any],
    name: str,
    task: str,
    model_path: str,
    num_gpus: float,
    num_cpus: float,
    cpu_threads: int,
    user_config: dict[str, Any],
) -> dict[str, Any]:
    """`base` with one more model, `name`, in its first application."""
    config = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    application = config["applications"][0]
    model = {"name": name, "task": task, "path": model_path, "device": "auto"}
    # On CPU the replica runs as many torch threads as its in-process ceiling; Ray's default
    # (one per CPU asked, at least 1) would compare 1 thread against all cores.
    application["args"]["models"].append({**model, "cpu_threads": cpu_threads})
    application.setdefault("deployments", []).append(
        {
            "name": name,
            "max_ongoing_requests": 64,
            "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
            "user_config": user_config,
        }
    )
    return dict(config)


def with_generator(
    base: dict[str, Any], model_path: str, num_gpus: float, num_cpus: float, cpu_threads: int
) -> dict[str, Any]:
    """`base` with one more model, `GENERATOR`, in its first application."""
    batching = {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}
    return with_model(
        base, GENERATOR, "generation", model_path, num_gpus, num_cpus, cpu_threads, batching
    )


def with_reranker(
    base: dict[str, Any], model_path: str, num_gpus: float, num_cpus: float, cpu_threads: int
) -> dict[str, Any]:
    """`base` with one more model, `RERANKER`, batching pairs as the ceiling does (32)."""
    batching = {"max_batch_size": 32, "batch_wait_timeout_s": 0.005}
    return with_model(
        base, RERANKER, "rerank", model_path, num_gpus, num_cpus, cpu_threads, batching
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "serve_config.yaml")
    parser.add_argument("--out", type=Path, required=True, help="folder for the config (and model)")
    parser.add_argument("--generation-path", help="a causal LM directory (default: tiny GPT-2)")
    parser.add_argument("--num-gpus", type=float, default=0.0)
    # Ray's CPU count only places replicas (torch threads come from --cpu-threads): 0.25 each lets
    # the ingress (0.25), the embedding model (1), a generator and a reranker fit on 2 CPUs.
    parser.add_argument("--num-cpus", type=float, default=0.25)
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of the added replicas on CPU (default: every core, as the "
        "in-process ceilings use)",
    )
    parser.add_argument("--rerank", action="store_true", help="add a cross-encoder too")
    parser.add_argument("--rerank-path", help="a cross-encoder directory (default: tiny random)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.generation_path
    if model_path is None:
        from tests.support.tiny_models import build_tiny_gpt2

        model_path = str(build_tiny_gpt2(args.out / "tiny-gpt2"))
    base = yaml.safe_load(args.base.read_text())
    config = with_generator(base, model_path, args.num_gpus, args.num_cpus, args.cpu_threads)
    if args.rerank or args.rerank_path:
        rerank_path = args.rerank_path
        if rerank_path is None:
            from tests.support.tiny_models import build_tiny_cross_encoder

            rerank_path = str(build_tiny_cross_encoder(args.out / "tiny-cross-encoder"))
        config = with_reranker(config, rerank_path, args.num_gpus, args.num_cpus, args.cpu_threads)
    dest = args.out / "bench_config.yaml"
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    print(dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
