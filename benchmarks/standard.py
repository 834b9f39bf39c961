"""The standard benchmark set (`make bench`): ceiling, then the service under load.

    python -m benchmarks.standard [--out DIR] [--duration-s 20] [--repeats 3] [--quick]
    python -m benchmarks.standard --url http://127.0.0.1:8000   # a service already up

Order matters on a shared 2-core machine: the ceiling is measured first, while
no service runs; then `serve run` is started, the ceiling is measured again beside the idle
service (benchmarks/ceilings.py says why), and the load runs follow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

from benchmarks import report
from benchmarks.ceilings import BESIDE_SERVICE, QUIET, Ceilings, CeilingSpec, measure_ceilings
from benchmarks.cpu_use import CpuSnapshot, RunCpu, cpu_by_role, cpu_snapshot
from benchmarks.loadgen import Bounds, ClosedLoop, LoadShape, OpenLoop, Target, run_load
from benchmarks.payloads import (
    DEFAULT_EMBEDDING_MODEL,
    RequestSet,
    completion_bodies,
    embedding_bodies,
    make_texts,
    rerank_bodies,
)
from benchmarks.rss import (
    ProcessRss,
    sample_service_rss,
    service_processes,
    total_mib,
    total_pss_mib,
)
from benchmarks.service_process import (
    ServeHandle,
    free_port,
    start_serve_run,
    stop,
    wait_ready,
)
from benchmarks.stats import is_ok, summarize
from benchmarks.summary import ScenarioSummary, headline, summarize_scenario
from benchmarks.target import require_loopback

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Inputs per load run; every run draws fresh texts so a response cache never hits.
POOL_INPUTS = 50_000


@dataclass(frozen=True)
class Plan:
    duration_s: float = 20.0
    warmup_s: float = 2.0
    repeats: int = 1
    # 1 client is the lone request (latency against one in-process pass); 128 is saturation.
    single_concurrencies: tuple[int, ...] = (1, 8, 32, 128)
    multi_inputs: int = 32
    multi_concurrencies: tuple[int, ...] = (1, 4)
    # Each is also a generation ceiling's batch: the most requests this load lets the service
    # batch. Every concurrency runs whole and streamed.
    completions_concurrencies: tuple[int, ...] = (8, 32)
    # Rerank (with --rerank-model): requests of one query and this many documents.
    rerank_documents: int = 16
    rerank_concurrencies: tuple[int, ...] = (1, 8)
    sweep_fractions: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    ceiling_duration_s: float = 10.0
    ceiling_batch_size: int = 32
    words_per_input: int = 16
    request_timeout_s: float = 60.0
    ready_timeout_s: float = 600.0
    seed: int = 0

    @classmethod
    def quick(cls) -> Plan:
        """About a minute of measuring: a smoke test of the whole path."""
        return cls(
            duration_s=4.0,
            warmup_s=1.0,
            sweep_fractions=(0.3, 0.7),
            ceiling_duration_s=3.0,
        )


@dataclass(frozen=True)
class RssSnapshot:
    when: str
    total_mib: float
    total_pss_mib: float | None
    processes: list[ProcessRss]


class Runner:
    """Runs scenarios against one service and folds their repeats."""

    def __init__(
        self,
        base_url: str,
        plan: Plan,
        ceilings: Ceilings,
        headers: dict[str, str],
        progress: bool,
        service_pid: int | None = None,
        beside_service: Ceilings | None = None,
    ) -> None:
        self._base_url = base_url
        self._service_pid = service_pid
        self._plan = plan
        self._ceilings = ceilings
        self._beside_service = beside_service or Ceilings()
        self._headers = headers
        self._progress = progress
        self._runs_started = 0

    def _fresh_texts(self) -> list[str]:
        self._runs_started += 1
        seed = self._plan.seed * 1_000 + self._runs_started
        return make_texts(POOL_INPUTS, seed=seed, words_per_text=self._plan.words_per_input)

    def scenario(
        self,
        name: str,
        make_requests: RequestMaker,
        shape: LoadShape,
        duration_s: float,
        repeats: int | None = None,
    ) -> ScenarioSummary:
        runs, busy, service_cpu = [], [], []
        inputs_per_request = 1
        for repeat in range(repeats or self._plan.repeats):
            requests = make_requests(self._fresh_texts())
            inputs_per_request = requests.inputs_per_request
            target = Target.from_request_set(self._base_url, requests, self._headers)
            if isinstance(shape, OpenLoop):
                shape = replace(shape, seed=self._plan.seed * 1_000 + self._runs_started)
            bounds = Bounds(duration_s, request_timeout_s=self._plan.request_timeout_s)
            cpu_before = self._service_cpu()
            psutil.cpu_percent(interval=None)  # starts the system-wide CPU window
            record = run_load(target, shape, bounds, self._progress, f"{name} #{repeat + 1}")
            busy.append(psutil.cpu_percent(interval=None))
            if cpu_before is not None:
                spent = cpu_by_role(cpu_before, self._service_cpu() or {})
                service_cpu.append(RunCpu(spent, sum(map(is_ok, record.status))))
            runs.append(summarize(record, inputs_per_request, self._plan.warmup_s))
        offered = shape.rate_rps if isinstance(shape, OpenLoop) else None
        return summarize_scenario(
            name,
            _describe(shape),
            inputs_per_request,
            runs,
            self._ceilings.for_load(make_requests.kind, shape),
            offered,
            busy,
            service_cpu,
            endpoint=make_requests.kind,
            beside_service=self._beside_service.for_load(make_requests.kind, shape),
        )

    def _service_cpu(self) -> CpuSnapshot | None:
        if self._service_pid is None:
            return None
        return cpu_snapshot(service_processes(self._service_pid))


class RequestMaker:
    """Builds a fresh request set from fresh texts (a named callable for typing)."""

    def __init__(
        self, kind: str, inputs_per_request: int = 1, model: str = "", stream: bool = False
    ) -> None:
        self.kind = kind
        self.inputs_per_request = inputs_per_request
        self.model = model
        self.stream = stream

    def __call__(self, texts: Sequence[str]) -> RequestSet:
        if self.kind == "completions":
            return completion_bodies(texts[:5_000], self.model, stream=self.stream)
        if self.kind == "rerank":
            return rerank_bodies(texts, self.inputs_per_request, self.model)
        return embedding_bodies(texts, self.inputs_per_request, self.model)


def _describe(shape: LoadShape) -> str:
    if isinstance(shape, ClosedLoop):
        return f"closed c={shape.concurrency}"
    return f"open {shape.rate_rps:.1f}/s"


def run_standard_set(
    runner: Runner, plan: Plan, completions_model: str | None, rerank_model: str | None = None
) -> list[ScenarioSummary]:
    total_s = plan.warmup_s + plan.duration_s
    single = RequestMaker("embeddings", 1, DEFAULT_EMBEDDING_MODEL)
    multi = RequestMaker("embeddings", plan.multi_inputs, DEFAULT_EMBEDDING_MODEL)
    results = [
        runner.scenario(f"single c={c}", single, ClosedLoop(c), total_s)
        for c in plan.single_concurrencies
    ]
    results.extend(
        runner.scenario(f"{plan.multi_inputs}-input c={c}", multi, ClosedLoop(c), total_s)
        for c in plan.multi_concurrencies
    )
    max_rps = max(r.throughput_rps for r in results if r.inputs_per_request == 1)
    if max_rps > 0:
        for fraction in plan.sweep_fractions:
            results.append(
                runner.scenario(
                    f"single open {fraction:.0%}",
                    single,
                    OpenLoop(rate_rps=fraction * max_rps),
                    total_s,
                )
            )
    if completions_model:
        results.extend(
            runner.scenario(
                f"completions{' streamed' if stream else ''} c={c}",
                RequestMaker("completions", model=completions_model, stream=stream),
                ClosedLoop(c),
                total_s,
            )
            for c in plan.completions_concurrencies
            for stream in (False, True)
        )
    if rerank_model:
        documents = plan.rerank_documents
        results.extend(
            runner.scenario(
                f"rerank {documents}-doc c={c}",
                RequestMaker("rerank", documents, rerank_model),
                ClosedLoop(c),
                total_s,
            )
            for c in plan.rerank_concurrencies
        )
    return results


def model_directory(config_path: Path, model_name: str) -> str:
    """The local weights of the model `model_name` that the Serve config serves."""
    # ModelSource.resolve_path says the same, but importing it brings torch into the generator.
    config = yaml.safe_load(config_path.read_text())
    for application in config.get("applications", []):
        for model in (application.get("args") or {}).get("models", []):
            if model.get("name") != model_name:
                continue
            if model.get("path"):
                return str(Path(model["path"]).expanduser())
            package = importlib.import_module(model["package"])
            return str(package.get_model_path())
    raise SystemExit(f"{config_path} serves no model named {model_name!r}")


def ceiling_spec(args: argparse.Namespace, plan: Plan) -> CeilingSpec:
    config = Path(args.config)
    return CeilingSpec(
        seed=plan.seed,
        words_per_input=plan.words_per_input,
        batch_size=plan.ceiling_batch_size,
        duration_s=plan.ceiling_duration_s,
        device=args.ceiling_device,
        torch_threads=args.ceiling_threads,
        generation_path=model_directory(config, args.completions_model)
        if args.completions_model
        else None,
        generation_batches=plan.completions_concurrencies,
        rerank_path=model_directory(config, args.rerank_model) if args.rerank_model else None,
        rerank_documents=plan.rerank_documents,
    )


def _rss(root_pid: int | None, when: str) -> RssSnapshot | None:
    if root_pid is None:
        return None
    samples = sorted(sample_service_rss(root_pid), key=lambda s: -s.rss_bytes)
    return RssSnapshot(when, total_mib(samples), total_pss_mib(samples), samples)


@contextmanager
def _service(
    args: argparse.Namespace, plan: Plan, out_dir: Path
) -> Iterator[tuple[str, int | None]]:
    """Yields (base URL, pid whose process tree is the service) and stops what it started."""
    if args.url:
        yield require_loopback(args.url), args.service_pid
        return
    port = args.port or free_port()
    handle: ServeHandle = start_serve_run(
        Path(args.config), port, log_path=out_dir / "serve_run.log", cwd=REPO_ROOT
    )
    try:
        print(
            f"serve run started (pid {handle.pid}), waiting for {handle.url}/readyz",
            file=sys.stderr,
        )
        waited_s = wait_ready(handle.url, plan.ready_timeout_s, handle)
        print(f"ready after {waited_s:.1f} s", file=sys.stderr)
        yield handle.url, handle.pid
    finally:
        code = stop(handle)
        print(f"serve run exited with {code}", file=sys.stderr)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Standard benchmark set for the service")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--duration-s", type=float, default=None, help="measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="runs per scenario; median kept")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=None,
        help="closed-loop single-input concurrencies (default 1 8 32 128)",
    )
    parser.add_argument(
        "--multi-concurrency",
        type=int,
        nargs="+",
        default=None,
        help="closed-loop concurrencies of multi-input requests (default 1 4)",
    )
    parser.add_argument("--multi-inputs", type=int, default=None)
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="+",
        default=None,
        help="open-loop rates as fractions of the best closed-loop req/s",
    )
    parser.add_argument("--ceiling-duration-s", type=float, default=None)
    parser.add_argument("--ceiling-batch-size", type=int, default=None)
    parser.add_argument("--ceiling-threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--ceiling-device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cuda: the ceiling in float16 on the GPU (with --config serve_config.gpu.yaml)",
    )
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--config", default=str(REPO_ROOT / "serve_config.yaml"))
    parser.add_argument("--port", type=int, default=None, help="port for the started service")
    parser.add_argument("--url", default=None, help="use this running service instead")
    parser.add_argument(
        "--service-pid",
        type=int,
        default=None,
        help="with --url: the `serve run` pid, to sample RSS",
    )
    parser.add_argument(
        "--completions-model",
        default=None,
        help="also load /v1/completions with this model (served by --config), against a "
        "generation ceiling on its weights",
    )
    parser.add_argument(
        "--completions-concurrency",
        type=int,
        nargs="+",
        default=None,
        help="closed-loop concurrencies of completions, whole and streamed (default 8 32)",
    )
    parser.add_argument(
        "--rerank-model",
        default=None,
        help="also load /v1/rerank with this model (served by --config), against "
        "CrossEncoder.predict on its weights",
    )
    parser.add_argument("--rerank-documents", type=int, default=None, help="per request (16)")
    parser.add_argument(
        "--rerank-concurrency",
        type=int,
        nargs="+",
        default=None,
        help="closed-loop concurrencies of rerank requests (default 1 8)",
    )
    parser.add_argument("--api-key", default=None, help="sent as a Bearer token")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    overrides = {
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "repeats": args.repeats,
        "single_concurrencies": tuple(args.concurrency) if args.concurrency else None,
        "multi_concurrencies": tuple(args.multi_concurrency) if args.multi_concurrency else None,
        "multi_inputs": args.multi_inputs,
        "completions_concurrencies": tuple(args.completions_concurrency)
        if args.completions_concurrency
        else None,
        "sweep_fractions": tuple(args.sweep) if args.sweep else None,
        "rerank_documents": args.rerank_documents,
        "rerank_concurrencies": tuple(args.rerank_concurrency) if args.rerank_concurrency else None,
        "ceiling_duration_s": args.ceiling_duration_s,
        "ceiling_batch_size": args.ceiling_batch_size,
        "seed": args.seed,
    }
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    plan = plan_from_args(args)
    if args.url:
        require_loopback(args.url)  # fail before spending minutes on the ceiling
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = args.out or RESULTS_DIR / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = None if args.skip_ceiling else ceiling_spec(args, plan)
    ceilings = Ceilings() if spec is None else measure_ceilings(spec, out_dir, QUIET)
    ceiling = ceilings.embedding
    beside_service = Ceilings()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    started_s = time.monotonic()
    with _service(args, plan, out_dir) as (base_url, service_pid):
        rss_idle = _rss(service_pid, "idle")
        # Only a service this run started is known to be idle here.
        if spec is not None and not args.url:
            beside_service = measure_ceilings(spec, out_dir, BESIDE_SERVICE)
        runner = Runner(
            base_url, plan, ceilings, headers, not args.no_progress, service_pid, beside_service
        )
        # One short run first: lazy initialisation, autoscaling and JIT warm here.
        warm = runner.scenario(
            "warm-up",
            RequestMaker("embeddings", 1, DEFAULT_EMBEDDING_MODEL),
            ClosedLoop(8),
            max(plan.warmup_s * 2, 2.0),
            repeats=1,
        )
        if warm.requests_ok == 0:
            raise SystemExit(f"warm-up got no successful answer: {warm.errors_by_status}")
        scenarios = run_standard_set(runner, plan, args.completions_model, args.rerank_model)
        rss_end = _rss(service_pid, "end")
    top = headline(scenarios)
    summary = {
        "started_at": stamp,
        "plan": plan,
        "base_url": base_url,
        "ceiling": ceiling,
        "generation_ceilings": list(ceilings.generation.values()),
        "rerank_ceiling": ceilings.rerank,
        "ceilings_beside_service": beside_service,
        "headline": top,
        "scenarios": scenarios,
        "rss": [s for s in (rss_idle, rss_end) if s is not None],
        "load_seconds": time.monotonic() - started_s,
        "cpu_count": psutil.cpu_count(),
    }
    report.write_json(out_dir / "summary.json", summary)
    report.plot_latency_vs_throughput(scenarios, ceiling, out_dir / "latency_vs_throughput.png")
    print()
    if ceiling is not None:
        print("\n".join(report.ceiling_lines(ceiling)))
    for gen_ceiling in ceilings.generation.values():
        print(report.generation_ceiling_line(gen_ceiling))
    if ceilings.rerank is not None:
        print(report.rerank_ceiling_line(ceilings.rerank))
    print("\n".join(report.beside_service_lines(ceilings, beside_service)))
    print(report.ratio_table(scenarios))
    print("\n".join(report.stream_lines(scenarios)))
    print("\n".join(report.cpu_breakdown_lines(scenarios)))
    print(report.headline_line(top))
    for note in report.warnings(scenarios, ceiling):
        print(f"warning: {note}")
    for snapshot in (rss_idle, rss_end):
        if snapshot is not None:
            pss = "" if snapshot.total_pss_mib is None else f" (PSS {snapshot.total_pss_mib:.0f})"
            print(
                f"memory of service processes ({snapshot.when}): RSS {snapshot.total_mib:.0f} MiB"
                f"{pss} in {len(snapshot.processes)} processes"
            )
    print(f"results: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
