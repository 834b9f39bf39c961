"""The in-process ceilings a `make bench` run is set against, measured twice: on a quiet
machine before the service starts (the ceilings the targets name), and again beside the
service once it is up and idle.

The second set tells the node's share of a gap from the service's. On the 2-core VM the idle
service (Ray's GCS, raylet and dashboard, the Serve controller, proxy, ingress and replicas)
woke about 2,400 times a second and used 15% of one core: every Ray worker checks for signals
every 10 ms. Beside it a 2-thread `encode` kept 0.69-0.82 of its quiet rate and a 2-thread
`generate` 0.69-0.81 (five runs each; a thread pre-empted in an operation leaves its partner
waiting at the end of it), two 1-thread passes 0.85-0.90 and a 1-thread `generate` 0.94.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import ceiling as embedding_ceiling
from benchmarks import generation_ceiling, rerank_ceiling
from benchmarks.ceiling import CeilingResult
from benchmarks.generation_ceiling import GenerationCeiling
from benchmarks.loadgen import ClosedLoop, LoadShape
from benchmarks.rerank_ceiling import RerankCeiling

AnyCeiling = CeilingResult | GenerationCeiling | RerankCeiling

# Where each set's JSON files go: `ceiling.json`, `ceiling_beside_service.json`, ...
QUIET = ""
BESIDE_SERVICE = "_beside_service"


@dataclass(frozen=True)
class CeilingSpec:
    """What to measure, the same both times."""

    seed: int
    words_per_input: int
    batch_size: int
    duration_s: float
    device: str = "cpu"
    torch_threads: int | None = None
    # Weights of the served generation model, and the batches (one per completions load).
    generation_path: str | None = None
    generation_batches: tuple[int, ...] = ()
    rerank_path: str | None = None
    rerank_documents: int = 16


@dataclass(frozen=True)
class Ceilings:
    embedding: CeilingResult | None = None
    generation: dict[int, GenerationCeiling] = field(default_factory=dict)
    rerank: RerankCeiling | None = None

    def for_load(self, kind: str, shape: LoadShape) -> AnyCeiling | None:
        """The ceiling a scenario of this endpoint and load is set against (completions: the
        generation ceiling whose batch is the number of clients)."""
        if kind == "completions":
            return self.generation.get(shape.concurrency if isinstance(shape, ClosedLoop) else 0)
        if kind == "rerank":
            return self.rerank
        return self.embedding


def throughput(ceiling: AnyCeiling | None) -> float | None:
    """The ceiling's rate in the unit its scenarios count: inputs, requests or pairs a second."""
    if isinstance(ceiling, GenerationCeiling):
        return ceiling.requests_per_s
    if isinstance(ceiling, RerankCeiling):
        return ceiling.pairs_per_s
    if ceiling is None:
        return None
    return ceiling.sentence_transformers_inputs_per_s


def measure_ceilings(spec: CeilingSpec, out_dir: Path, suffix: str) -> Ceilings:
    """Each ceiling in its own child Python, one after another; `suffix` names the set."""
    where = "no service running" if suffix == QUIET else "beside the idle service"
    print(f"measuring the ceiling ({where})...", file=sys.stderr)
    embedding = embedding_ceiling.measure_in_subprocess(
        out_dir / f"ceiling{suffix}.json",
        seed=spec.seed,
        words_per_input=spec.words_per_input,
        batch_size=spec.batch_size,
        duration_s=spec.duration_s,
        torch_threads=spec.torch_threads,
        device=spec.device,
    )
    generation: dict[int, GenerationCeiling] = {}
    for batch in spec.generation_batches if spec.generation_path else ():
        print(f"measuring the generation ceiling, batch {batch} ({where})...", file=sys.stderr)
        generation[batch] = generation_ceiling.measure_in_subprocess(
            out_dir / f"generation_ceiling_{batch}{suffix}.json",
            str(spec.generation_path),
            seed=spec.seed,
            batch_size=batch,
            words_per_input=spec.words_per_input,
            duration_s=spec.duration_s,
            device=spec.device,
        )
    rerank: RerankCeiling | None = None
    if spec.rerank_path:
        print(f"measuring the rerank ceiling ({where})...", file=sys.stderr)
        rerank = rerank_ceiling.measure_in_subprocess(
            out_dir / f"rerank_ceiling{suffix}.json",
            spec.rerank_path,
            seed=spec.seed,
            batch_size=spec.batch_size,
            documents_per_request=spec.rerank_documents,
            words_per_input=spec.words_per_input,
            duration_s=spec.duration_s,
            device=spec.device,
        )
    return Ceilings(embedding, generation, rerank)
