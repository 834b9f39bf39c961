"""Soak: open-loop load at a fixed rate for a long time, sampling the RSS of
every service process as it goes, then reporting memory growth and latency drift, and a
verdict (`verdict.json`, exit status 1 when it fails): no failed request, and no process whose
memory still grows in the later half of the run faster than `--max-slope-mib-per-min`.

    python -m benchmarks.soak --duration-s 600 --rate-rps 20
    python -m benchmarks.soak --url http://127.0.0.1:8000 --service-pid PID --rate-rps 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import report
from benchmarks.loadgen import Bounds, OpenLoop, Target, run_async, run_load_async
from benchmarks.payloads import embedding_bodies, make_texts
from benchmarks.rss import ProcessRss, sample_service_rss, total_pss_mib
from benchmarks.service_process import free_port, start_serve_run, stop, wait_ready
from benchmarks.stats import RunRecord, RunStats, WindowStats, summarize, windowed
from benchmarks.target import require_loopback

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
_MIB = 2**20


@dataclass(frozen=True)
class RssSample:
    t_s: float
    processes: list[ProcessRss]

    @property
    def total_mib(self) -> float:
        return sum(p.rss_bytes for p in self.processes) / _MIB

    @property
    def total_pss_mib(self) -> float | None:
        return total_pss_mib(self.processes)


@dataclass(frozen=True)
class ProcessGrowth:
    pid: int
    label: str
    first_mib: float
    last_mib: float

    @property
    def growth_mib(self) -> float:
        return self.last_mib - self.first_mib


@dataclass(frozen=True)
class ProcessSlope:
    pid: int
    label: str
    slope_mib_per_min: float


@dataclass(frozen=True)
class Verdict:
    """Whether the soak passed, and everything it was judged on."""

    passed: bool
    reasons: list[str]
    requests: int
    failed_requests: int
    errors_by_status: dict[str, int]
    judged_from_s: float
    max_slope_mib_per_min: float
    slopes: list[ProcessSlope]


@dataclass(frozen=True)
class SoakReport:
    stats: RunStats
    windows: list[WindowStats]
    total_first_mib: float
    total_last_mib: float
    total_slope_mib_per_min: float | None
    processes: list[ProcessGrowth]
    samples: list[RssSample]


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of y on x; None with fewer than two distinct x."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var_x


def process_growth(samples: Sequence[RssSample]) -> list[ProcessGrowth]:
    """First and last RSS of each pid seen, largest growth first."""
    first: dict[int, ProcessRss] = {}
    last: dict[int, ProcessRss] = {}
    for sample in samples:
        for proc in sample.processes:
            first.setdefault(proc.pid, proc)
            last[proc.pid] = proc
    growth = [
        ProcessGrowth(pid, last[pid].label, first[pid].rss_bytes / _MIB, last[pid].rss_bytes / _MIB)
        for pid in first
    ]
    return sorted(growth, key=lambda g: -g.growth_mib)


def process_slopes(samples: Sequence[RssSample]) -> list[ProcessSlope]:
    """Each process's RSS trend over `samples` (processes seen at least twice), steepest first."""
    points: dict[int, list[tuple[float, float]]] = {}
    labels: dict[int, str] = {}
    for sample in samples:
        for proc in sample.processes:
            points.setdefault(proc.pid, []).append((sample.t_s, proc.rss_bytes / _MIB))
            labels[proc.pid] = proc.label
    slopes = []
    for pid, series in points.items():
        slope_per_s = linear_slope([t for t, _ in series], [mib for _, mib in series])
        if slope_per_s is not None:
            slopes.append(ProcessSlope(pid, labels[pid], slope_per_s * 60))
    return sorted(slopes, key=lambda s: -s.slope_mib_per_min)


def judge(
    record: RunRecord,
    samples: Sequence[RssSample],
    duration_s: float,
    warmup_s: float,
    max_slope_mib_per_min: float,
) -> Verdict:
    """Every request answered with 2xx, and memory levelled off: each process's slope over the
    later half of the run (after the warm-up), when caches and pools have filled, within
    `max_slope_mib_per_min`."""
    judged_from_s = max(warmup_s, duration_s / 2)
    slopes = process_slopes([s for s in samples if s.t_s >= judged_from_s])
    failed = [status for status in record.status if not 200 <= status < 300]
    errors: dict[str, int] = {}
    for status in failed:
        errors[str(status)] = errors.get(str(status), 0) + 1
    reasons = []
    if not record.status:
        reasons.append("no request was sent")
    if failed:
        reasons.append(f"{len(failed)} of {len(record.status)} requests failed: {errors}")
    if samples and not slopes:
        reasons.append("too few memory samples in the later half to judge growth")
    reasons += [
        f"pid {s.pid} ({s.label[:60]}) still grows {s.slope_mib_per_min:+.2f} MiB/min"
        for s in slopes
        if s.slope_mib_per_min > max_slope_mib_per_min
    ]
    return Verdict(
        passed=not reasons,
        reasons=reasons,
        requests=len(record.status),
        failed_requests=len(failed),
        errors_by_status=errors,
        judged_from_s=judged_from_s,
        max_slope_mib_per_min=max_slope_mib_per_min,
        slopes=slopes,
    )


def analyse(
    record: RunRecord, samples: Sequence[RssSample], warmup_s: float, window_s: float
) -> SoakReport:
    """Growth is measured from the first sample after the warm-up."""
    steady = [s for s in samples if s.t_s >= warmup_s] or list(samples)
    slope_per_s = linear_slope([s.t_s for s in steady], [s.total_mib for s in steady])
    return SoakReport(
        stats=summarize(record, 1, warmup_s),
        windows=windowed(record, window_s),
        total_first_mib=steady[0].total_mib if steady else 0.0,
        total_last_mib=steady[-1].total_mib if steady else 0.0,
        total_slope_mib_per_min=None if slope_per_s is None else slope_per_s * 60,
        processes=process_growth(steady),
        samples=list(samples),
    )


async def _sample_until(
    root_pid: int, every_s: float, done: asyncio.Event, out: list[RssSample]
) -> None:
    t0_s = time.perf_counter()
    while True:
        # psutil blocks; a thread keeps the dispatcher on schedule.
        processes = await asyncio.to_thread(sample_service_rss, root_pid)
        out.append(RssSample(time.perf_counter() - t0_s, processes))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=every_s)
            return


async def soak(
    target: Target, shape: OpenLoop, bounds: Bounds, root_pid: int | None, every_s: float
) -> tuple[RunRecord, list[RssSample]]:
    samples: list[RssSample] = []
    done = asyncio.Event()
    sampler = (
        asyncio.create_task(_sample_until(root_pid, every_s, done, samples))
        if root_pid is not None
        else None
    )
    try:
        record = await run_load_async(target, shape, bounds, progress=True, label="soak")
    finally:
        done.set()
        if sampler is not None:
            await sampler
    return record, samples


@contextlib.contextmanager
def _service(args: argparse.Namespace, out_dir: Path) -> Iterator[tuple[str, int | None]]:
    if args.url:
        yield require_loopback(args.url), args.service_pid
        return
    handle = start_serve_run(
        Path(args.config),
        args.port or free_port(),
        log_path=out_dir / "serve_run.log",
        cwd=REPO_ROOT,
    )
    try:
        wait_ready(handle.url, args.ready_timeout_s, handle)
        yield handle.url, handle.pid
    finally:
        stop(handle)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Soak the service; report RSS growth")
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--rate-rps", "--rate", type=float, required=True)
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument("--sample-every-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--window-s", type=float, default=60.0, help="latency drift slices")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--url", default=None, help="use this running service")
    parser.add_argument("--service-pid", type=int, default=None, help="with --url: for RSS")
    parser.add_argument("--config", default=str(REPO_ROOT / "serve_config.yaml"))
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-slope-mib-per-min",
        type=float,
        default=2.0,
        help="fail when a process's RSS grows faster than this in the later half of the run",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.url and args.service_pid is None:
        print("no --service-pid: latency only, no RSS", file=sys.stderr)
    out_dir: Path = args.out or RESULTS_DIR / (
        "soak-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Enough distinct texts that a response cache would not hit during the soak.
    count = int(args.rate_rps * args.duration_s * 1.2 + 100) * args.inputs_per_request
    requests = embedding_bodies(make_texts(count, seed=args.seed), args.inputs_per_request)
    with _service(args, out_dir) as (base_url, root_pid):
        target = Target.from_request_set(base_url, requests)
        shape = OpenLoop(args.rate_rps, seed=args.seed)
        record, samples = run_async(
            soak(target, shape, Bounds(args.duration_s), root_pid, args.sample_every_s)
        )
    result = analyse(record, samples, args.warmup_s, args.window_s)
    verdict = judge(record, samples, args.duration_s, args.warmup_s, args.max_slope_mib_per_min)
    report.write_json(out_dir / "soak.json", {"args": vars(args), "report": asdict(result)})
    report.write_json(out_dir / "verdict.json", asdict(verdict))
    _plot(result, out_dir)
    _print_summary(result, args.duration_s, args.rate_rps)
    print(("PASS" if verdict.passed else "FAIL: " + "; ".join(verdict.reasons)), flush=True)
    print(f"results: {out_dir}")
    return 0 if verdict.passed else 1


def _plot(result: SoakReport, out_dir: Path) -> None:
    samples = result.samples
    if samples:
        series = {"total RSS": ([s.t_s for s in samples], [s.total_mib for s in samples])}
        pss = [(s.t_s, s.total_pss_mib) for s in samples if s.total_pss_mib is not None]
        if pss:
            series["total PSS"] = ([t for t, _ in pss], [m for _, m in pss])
        for growth in sorted(result.processes, key=lambda g: -g.last_mib)[:8]:
            points = [
                (s.t_s, p.rss_bytes / _MIB)
                for s in samples
                for p in s.processes
                if p.pid == growth.pid
            ]
            series[f"{growth.pid} {growth.label[:40]}"] = (
                [t for t, _ in points],
                [mib for _, mib in points],
            )
        report.plot_series(series, out_dir / "rss.png", "seconds", "RSS MiB", "RSS during soak")
    windows = [w for w in result.windows if w.p50_ms is not None and w.p99_ms is not None]
    starts = [w.start_s for w in windows]
    report.plot_series(
        {
            "p50": (starts, [w.p50_ms or 0.0 for w in windows]),
            "p99": (starts, [w.p99_ms or 0.0 for w in windows]),
        },
        out_dir / "latency_over_time.png",
        "seconds",
        "latency ms",
        "Latency during soak",
    )


def _print_summary(result: SoakReport, duration_s: float, rate_rps: float) -> None:
    stats = result.stats
    latency = (
        f"p50 {stats.latency.p50_ms:.1f} ms, p99 {stats.latency.p99_ms:.1f} ms"
        if stats.latency
        else "no successful request"
    )
    print(
        f"soak {duration_s:.0f} s at {rate_rps} req/s: {stats.throughput_rps:.1f} req/s ok, "
        f"{latency}, errors {stats.errors_by_status or 0}"
    )
    if result.samples:
        print(
            f"RSS total {result.total_first_mib:.0f} -> {result.total_last_mib:.0f} MiB "
            f"(slope {result.total_slope_mib_per_min or 0.0:+.2f} MiB/min after warm-up)"
        )
        for growth in result.processes[:5]:
            print(f"  {growth.growth_mib:+8.1f} MiB  pid {growth.pid}  {growth.label[:70]}")


if __name__ == "__main__":
    raise SystemExit(main())
