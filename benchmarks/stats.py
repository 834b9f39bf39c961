"""Turn per-request records into throughput, latency percentiles and error counts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

# Negative statuses: the request got no HTTP answer (or a bad one).
STATUS_TIMEOUT = -1
STATUS_CONNECTION_ERROR = -2
STATUS_INVALID_BODY = -3

_STATUS_NAMES = {
    STATUS_TIMEOUT: "timeout",
    STATUS_CONNECTION_ERROR: "connection_error",
    STATUS_INVALID_BODY: "invalid_body",
}


def status_name(status: int) -> str:
    """`"200"`, `"429"`, ... or a name for failures without an HTTP status."""
    return _STATUS_NAMES.get(status, str(status))


def is_ok(status: int) -> bool:
    return 200 <= status < 300


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class StreamRecord:
    """One streamed answer: when it was sent (seconds from the run start), the time to its
    first event with text, and the gaps between its events with text."""

    start_s: float
    first_token_s: float
    gaps_s: list[float]


@dataclass
class RunRecord:
    """Every request of one run; times are seconds from the run start.

    For open loop `start_s` is the scheduled arrival, so latency includes any
    time the request waited on the client side (no coordinated omission).
    """

    start_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    # Streamed answers only, one entry each.
    streams: list[StreamRecord] = field(default_factory=list)
    wall_s: float = 0.0
    generator_cpu_s: float = 0.0
    max_dispatch_lag_s: float = 0.0

    def add(self, start_s: float, latency_s: float, status: int) -> None:
        self.start_s.append(start_s)
        self.latency_s.append(latency_s)
        self.status.append(status)

    def add_stream(self, start_s: float, first_token_s: float, gaps_s: Sequence[float]) -> None:
        self.streams.append(StreamRecord(start_s, first_token_s, list(gaps_s)))


@dataclass(frozen=True)
class LatencySummary:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass(frozen=True)
class RunStats:
    """What one run measured, after the warm-up is dropped."""

    requests_sent: int
    requests_ok: int
    requests_failed: int
    errors_by_status: dict[str, int]
    throughput_rps: float
    inputs_per_s: float
    window_s: float
    latency: LatencySummary | None
    generator_cpu_fraction: float
    max_dispatch_lag_ms: float
    # Streamed answers: time to the first text, and between text events (inter-token latency).
    first_token: LatencySummary | None = None
    token_gap: LatencySummary | None = None


def summarize_latency(latencies_s: Sequence[float]) -> LatencySummary | None:
    if not latencies_s:
        return None
    return LatencySummary(
        p50_ms=percentile(latencies_s, 50) * 1e3,
        p95_ms=percentile(latencies_s, 95) * 1e3,
        p99_ms=percentile(latencies_s, 99) * 1e3,
        mean_ms=sum(latencies_s) / len(latencies_s) * 1e3,
        max_ms=max(latencies_s) * 1e3,
    )


def summarize(record: RunRecord, inputs_per_request: int, warmup_s: float = 0.0) -> RunStats:
    """Stats over requests sent after `warmup_s`.

    Throughput counts successful answers that *finished* inside the window
    [warmup_s, end], end being the run's last answer; dividing finished-in-window
    by window length is steady-state throughput whatever the load shape.
    """
    ends_s = [s + lat for s, lat in zip(record.start_s, record.latency_s, strict=True)]
    window_end_s = max(ends_s, default=0.0)
    window_s = window_end_s - warmup_s
    if window_s <= 0:
        # Runs shorter than their warm-up still report something.
        warmup_s, window_s = 0.0, window_end_s
    finished_ok = sum(
        1
        for end, status in zip(ends_s, record.status, strict=True)
        if is_ok(status) and end >= warmup_s
    )
    kept = [i for i, s in enumerate(record.start_s) if s >= warmup_s]
    ok_latencies = [record.latency_s[i] for i in kept if is_ok(record.status[i])]
    errors = Counter(status_name(record.status[i]) for i in kept if not is_ok(record.status[i]))
    throughput_rps = finished_ok / window_s if window_s > 0 else 0.0
    streams = [stream for stream in record.streams if stream.start_s >= warmup_s]
    return RunStats(
        requests_sent=len(kept),
        requests_ok=len(ok_latencies),
        requests_failed=len(kept) - len(ok_latencies),
        errors_by_status=dict(sorted(errors.items())),
        throughput_rps=throughput_rps,
        inputs_per_s=throughput_rps * inputs_per_request,
        window_s=window_s,
        latency=summarize_latency(ok_latencies),
        generator_cpu_fraction=(
            record.generator_cpu_s / record.wall_s if record.wall_s > 0 else 0.0
        ),
        max_dispatch_lag_ms=record.max_dispatch_lag_s * 1e3,
        first_token=summarize_latency([stream.first_token_s for stream in streams]),
        token_gap=summarize_latency([gap for stream in streams for gap in stream.gaps_s]),
    )


@dataclass(frozen=True)
class WindowStats:
    """Latency of the requests sent during one slice of a long run."""

    start_s: float
    requests_ok: int
    requests_failed: int
    p50_ms: float | None
    p99_ms: float | None


def windowed(record: RunRecord, window_s: float) -> list[WindowStats]:
    """Per-slice latency, to see drift over a soak run."""
    if window_s <= 0:
        raise ValueError("window_s must be > 0")
    buckets: dict[int, list[int]] = {}
    for i, start in enumerate(record.start_s):
        buckets.setdefault(int(start // window_s), []).append(i)
    out: list[WindowStats] = []
    for bucket in sorted(buckets):
        indices = buckets[bucket]
        ok = [record.latency_s[i] for i in indices if is_ok(record.status[i])]
        out.append(
            WindowStats(
                start_s=bucket * window_s,
                requests_ok=len(ok),
                requests_failed=len(indices) - len(ok),
                p50_ms=percentile(ok, 50) * 1e3 if ok else None,
                p99_ms=percentile(ok, 99) * 1e3 if ok else None,
            )
        )
    return out


def goodput_rps(record: RunRecord, objective_s: float, window_s: tuple[float, float]) -> float:
    """Answers within the objective per second: successful requests sent in `window_s`
    (start, end: seconds from the run start) whose latency is at most `objective_s`."""
    start_s, end_s = window_s
    good = sum(
        1
        for sent_s, latency_s, status in zip(
            record.start_s, record.latency_s, record.status, strict=True
        )
        if start_s <= sent_s < end_s and is_ok(status) and latency_s <= objective_s
    )
    return good / (end_s - start_s) if end_s > start_s else 0.0
