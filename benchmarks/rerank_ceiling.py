"""The rerank ceiling: sentence-transformers' `CrossEncoder.predict` on the benchmark's
(query, document) pairs in one process, no service.

Pairs cut from the benchmark's texts as the rerank load cuts them
(`benchmarks.payloads.rerank_queries`), scored in batches of `batch_size` pairs back to back.
The service's rerank figures are printed as ratios to this: documents/s over pairs/s, and p50
over one `predict` of one request's pairs.
On CUDA the model runs in float16, as a replica with `dtype: auto` does.

    python -m benchmarks.rerank_ceiling --model-path DIR --json-out rerank_ceiling.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.ceiling import (
    inputs_per_s,
    median_latency_ms,
    quiet_offline_child,
    run_child,
    write_result,
)
from benchmarks.payloads import make_texts, rerank_queries

TEXTS = 4096
Pair = tuple[str, str]


@dataclass(frozen=True)
class RerankCeiling:
    model_path: str
    device: str
    batch_size: int
    documents_per_request: int
    pairs_per_s: float
    # Median time of one `predict` of one request's pairs.
    request_ms: float
    measured_at: str


def pairs_of(texts: Sequence[str], documents_per_request: int) -> list[Pair]:
    """The load's requests as pairs, request after request."""
    return [
        (query, document)
        for query, documents in rerank_queries(texts, documents_per_request)
        for document in documents
    ]


def measure(
    model_path: str,
    pairs: Sequence[Pair],
    batch_size: int,
    documents_per_request: int,
    duration_s: float = 10.0,
    device: str = "cpu",
) -> RerankCeiling:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_path, device=device)
    if device == "cuda":
        model.half()

    def predict(batch: list[Pair]) -> Any:
        return model.predict(batch, batch_size=len(batch), show_progress_bar=False)

    predict(list(pairs[:batch_size]))  # the first call pays for lazy initialisation
    return RerankCeiling(
        model_path=model_path,
        device=device,
        batch_size=batch_size,
        documents_per_request=documents_per_request,
        pairs_per_s=inputs_per_s(predict, pairs, batch_size, duration_s),
        request_ms=median_latency_ms(predict, pairs, documents_per_request),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def measure_in_subprocess(
    json_out: Path,
    model_path: str,
    seed: int,
    batch_size: int,
    documents_per_request: int,
    words_per_input: int = 16,
    duration_s: float = 10.0,
    device: str = "cpu",
    timeout_s: float = 900.0,
) -> RerankCeiling:
    """Run `measure` in a child Python (torch never lives in the load generator)."""
    options = ["--model-path", model_path, "--seed", str(seed), "--batch-size", str(batch_size)]
    options += ["--documents", str(documents_per_request)]
    options += ["--words-per-input", str(words_per_input)]
    options += ["--duration-s", str(duration_s), "--device", device]
    return RerankCeiling(**run_child("benchmarks.rerank_ceiling", options, json_out, timeout_s))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process rerank ceiling")
    parser.add_argument("--model-path", required=True, help="a local cross-encoder directory")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per predict call")
    parser.add_argument("--documents", type=int, default=16, help="documents per request")
    parser.add_argument("--words-per-input", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: float16")
    args = parser.parse_args(argv)
    quiet_offline_child()
    texts = make_texts(TEXTS, seed=args.seed, words_per_text=args.words_per_input)
    result = measure(
        args.model_path,
        pairs_of(texts, args.documents),
        args.batch_size,
        args.documents,
        args.duration_s,
        args.device,
    )
    write_result(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
