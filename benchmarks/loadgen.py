"""Closed- and open-loop HTTP load on one endpoint, recording every request.

Kept cheap because it shares the CPU with the server: bodies are pre-encoded,
answers are read but not parsed (unless a validator is given), one keep-alive
connection pool is sized to the load, and the event loop is uvloop when present.

Run one load from the command line:

    python -m benchmarks.loadgen --mode closed --concurrency 32 --duration-s 20
    python -m benchmarks.loadgen --mode open --rate-rps 50 --inputs-per-request 32
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import aiohttp
from tqdm import tqdm

from benchmarks.payloads import (
    DEFAULT_EMBEDDING_MODEL,
    RequestSet,
    completion_bodies,
    embedding_bodies,
    make_texts,
)
from benchmarks.schedule import poisson_arrivals_s
from benchmarks.stats import (
    STATUS_CONNECTION_ERROR,
    STATUS_INVALID_BODY,
    STATUS_TIMEOUT,
    RunRecord,
    summarize,
)
from benchmarks.target import DEFAULT_BASE_URL, endpoint_url, require_loopback

_JSON_HEADERS = {"Content-Type": "application/json"}
# After the last dispatch, in-flight requests get their timeout plus this margin.
_DRAIN_MARGIN_S = 5.0

Validator = Callable[[bytes], bool]
T = TypeVar("T")


@dataclass(frozen=True)
class ClosedLoop:
    """`concurrency` clients, each sending its next request when the last returns."""

    concurrency: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")


@dataclass(frozen=True)
class OpenLoop:
    """Poisson arrivals at `rate_rps`, whatever the service's answer time.

    `max_in_flight` caps open connections; requests beyond it wait in the client,
    and that wait counts in their latency.
    """

    rate_rps: float
    seed: int = 0
    max_in_flight: int = 1024

    def __post_init__(self) -> None:
        if self.rate_rps <= 0:
            raise ValueError("rate_rps must be > 0")


LoadShape = ClosedLoop | OpenLoop


@dataclass(frozen=True)
class Bounds:
    """Every run ends: at `duration_s`, or after `max_requests`, whichever is first."""

    duration_s: float
    max_requests: int | None = None
    request_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")


@dataclass(frozen=True)
class Target:
    """One endpoint on this machine and the bodies to send to it, in turn."""

    url: str
    bodies: Sequence[bytes]
    inputs_per_request: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    validator: Validator | None = None
    # Server-Sent Events: the time of each event with text is recorded as it arrives.
    streamed: bool = False

    def __post_init__(self) -> None:
        require_loopback(self.url)
        if not self.bodies:
            raise ValueError("no request bodies")

    @classmethod
    def from_request_set(
        cls, base_url: str, requests: RequestSet, headers: dict[str, str] | None = None
    ) -> Target:
        return cls(
            url=endpoint_url(base_url, requests.path),
            bodies=requests.bodies,
            inputs_per_request=requests.inputs_per_request,
            headers=headers or {},
            streamed=requests.streamed,
        )


class _Sender:
    """Sends one body and files the outcome into the record."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        record: RunRecord,
        t0_s: float,
        bar: tqdm[Any],
    ) -> None:
        self._session = session
        self._url = target.url
        self._headers = {**_JSON_HEADERS, **target.headers}
        self._validator = target.validator
        self._streamed = target.streamed
        self._record = record
        self._t0_s = t0_s
        self._bar = bar

    async def send(self, body: bytes, start_s: float) -> None:
        """`start_s` is absolute perf_counter time the latency is measured from."""
        status = await self._status_of(body, start_s)
        self._record.add(start_s - self._t0_s, time.perf_counter() - start_s, status)
        self._bar.update(1)

    async def _status_of(self, body: bytes, start_s: float) -> int:
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as response:
                if self._streamed and response.status == 200:
                    return await self._read_events(response, start_s)
                payload = await response.read()  # frees the connection for reuse
                ok = 200 <= response.status < 300
                if ok and self._validator is not None and not self._validator(payload):
                    return STATUS_INVALID_BODY
                return response.status
        except TimeoutError:
            return STATUS_TIMEOUT
        except aiohttp.ClientError:
            return STATUS_CONNECTION_ERROR

    async def _read_events(self, response: aiohttp.ClientResponse, start_s: float) -> int:
        """Read an event stream to its end, timing each event that carries text."""
        times_s: list[float] = []
        async for line in response.content:
            if line.startswith(b"data: {") and _TEXT_FIELD.search(line):
                times_s.append(time.perf_counter())
        if not times_s:
            return STATUS_INVALID_BODY
        gaps_s = [later - earlier for earlier, later in itertools.pairwise(times_s)]
        self._record.add_stream(start_s - self._t0_s, times_s[0] - start_s, gaps_s)
        return response.status


# A completion or chat event with some text (finish-only and usage events have none).
_TEXT_FIELD = re.compile(rb'"(?:text|content)":\s*"[^"]')


async def _closed_loop(
    sender: _Sender, target: Target, shape: ClosedLoop, bounds: Bounds, t0_s: float
) -> float:
    deadline_s = t0_s + bounds.duration_s
    claimed = itertools.count()  # shared: each index is sent exactly once

    async def client() -> None:
        while (now_s := time.perf_counter()) < deadline_s:
            index = next(claimed)
            if bounds.max_requests is not None and index >= bounds.max_requests:
                return
            await sender.send(target.bodies[index % len(target.bodies)], now_s)

    await asyncio.gather(*(client() for _ in range(shape.concurrency)))
    return 0.0


async def dispatch_on_schedule(
    arrivals_s: Sequence[float],
    t0_s: float,
    send: Callable[[int, float], Coroutine[Any, Any, None]],
    drain_timeout_s: float,
) -> float:
    """Start ``send(index, due_s)`` at each arrival (seconds after ``t0_s``, a perf_counter
    time) without waiting for answers, then give those in flight ``drain_timeout_s`` to end.
    Returns the worst lateness of a dispatch."""
    in_flight: set[asyncio.Task[None]] = set()
    max_lag_s = 0.0
    for index, offset_s in enumerate(arrivals_s):
        due_s = t0_s + offset_s
        wait_s = due_s - time.perf_counter()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        else:
            max_lag_s = max(max_lag_s, -wait_s)
        task = asyncio.create_task(send(index, due_s))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        _, late = await asyncio.wait(set(in_flight), timeout=drain_timeout_s)
        for task in late:  # cannot happen unless the sender ignores its own timeout
            task.cancel()
    return max_lag_s


async def _open_loop(
    sender: _Sender, target: Target, shape: OpenLoop, bounds: Bounds, t0_s: float
) -> float:
    """Dispatch on schedule; returns the worst lateness of a dispatch."""
    arrivals_s = poisson_arrivals_s(
        shape.rate_rps, bounds.duration_s, shape.seed, bounds.max_requests
    )
    bodies = target.bodies

    def send(index: int, due_s: float) -> Coroutine[Any, Any, None]:
        return sender.send(bodies[index % len(bodies)], due_s)

    return await dispatch_on_schedule(
        arrivals_s, t0_s, send, bounds.request_timeout_s + _DRAIN_MARGIN_S
    )


async def run_load_async(
    target: Target,
    shape: LoadShape,
    bounds: Bounds,
    progress: bool = True,
    label: str = "",
) -> RunRecord:
    """Drive one load and return every request it made."""
    limit = shape.concurrency if isinstance(shape, ClosedLoop) else shape.max_in_flight
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=60.0)
    timeout = aiohttp.ClientTimeout(total=bounds.request_timeout_s)
    record = RunRecord()
    expected = bounds.max_requests
    if isinstance(shape, OpenLoop):
        expected = round(shape.rate_rps * bounds.duration_s)
    with tqdm(
        total=expected,
        desc=label or None,
        unit="req",
        file=sys.stderr,
        disable=not progress,
        # A log file (no terminal) gets a line every 10 s instead of a live bar.
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        leave=False,
    ) as bar:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
        ) as session:
            cpu0_s, t0_s = time.process_time(), time.perf_counter()
            sender = _Sender(session, target, record, t0_s, bar)
            if isinstance(shape, ClosedLoop):
                lag_s = await _closed_loop(sender, target, shape, bounds, t0_s)
            else:
                lag_s = await _open_loop(sender, target, shape, bounds, t0_s)
            record.wall_s = time.perf_counter() - t0_s
            record.generator_cpu_s = time.process_time() - cpu0_s
            record.max_dispatch_lag_s = lag_s
    return record


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when installed (cheaper per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run_load(
    target: Target,
    shape: LoadShape,
    bounds: Bounds,
    progress: bool = True,
    label: str = "",
) -> RunRecord:
    """Blocking form of `run_load_async`."""
    return run_async(run_load_async(target, shape, bounds, progress, label))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_BASE_URL, help="loopback base URL")
    parser.add_argument("--endpoint", choices=("embeddings", "completions"), default="embeddings")
    parser.add_argument("--model", default=None, help="model name in the body")
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate-rps", type=float, default=10.0)
    parser.add_argument("--inputs-per-request", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--words-per-input", type=int, default=16)
    parser.add_argument("--api-key", default=None, help="sent as a Bearer token")
    parser.add_argument("--out", default=None, help="write stats JSON here")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    base_url = require_loopback(args.url)
    texts = make_texts(50_000, seed=args.seed, words_per_text=args.words_per_input)
    if args.endpoint == "embeddings":
        requests = embedding_bodies(
            texts, args.inputs_per_request, args.model or DEFAULT_EMBEDDING_MODEL
        )
    else:
        if args.model is None:
            raise SystemExit("--model is required for completions")
        requests = completion_bodies(texts, args.model, args.max_tokens)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    target = Target.from_request_set(base_url, requests, headers)
    shape: LoadShape = (
        ClosedLoop(args.concurrency)
        if args.mode == "closed"
        else OpenLoop(args.rate_rps, seed=args.seed)
    )
    bounds = Bounds(args.warmup_s + args.duration_s, args.max_requests, args.timeout_s)
    record = run_load(target, shape, bounds, progress=not args.no_progress)
    stats = summarize(record, target.inputs_per_request, args.warmup_s)
    text = json.dumps(
        {"shape": asdict(shape), "bounds": asdict(bounds), "stats": asdict(stats)},
        indent=2,
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
