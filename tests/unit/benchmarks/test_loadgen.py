"""The load generator without Ray: statistics, schedules, host refusal, and both
engines against a tiny aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from benchmarks import report
from benchmarks.loadgen import Bounds, ClosedLoop, OpenLoop, Target, Validator, run_load_async
from benchmarks.payloads import embedding_bodies, make_texts
from benchmarks.report import plot_latency_vs_throughput, ratio_table
from benchmarks.rss import ProcessRss, service_processes
from benchmarks.schedule import poisson_arrivals_s
from benchmarks.soak import RssSample, judge, linear_slope, process_growth
from benchmarks.stats import (
    RunRecord,
    percentile,
    status_name,
    summarize,
    windowed,
)
from benchmarks.summary import headline, summarize_scenario
from benchmarks.target import NonLoopbackTargetError, endpoint_url, require_loopback
from tests.support.bench_results import ceiling_result

# --- statistics -------------------------------------------------------------


def test_percentile_known_values() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0, 1.0, 3.0], 0) == 1.0
    assert percentile([5.0, 1.0, 3.0], 100) == 5.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(1.0) for _ in range(1001)]
    for q in (0, 1, 50, 95, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def _record(rows: list[tuple[float, float, int]]) -> RunRecord:
    record = RunRecord()
    for start_s, latency_s, status in rows:
        record.add(start_s, latency_s, status)
    return record


def test_summarize_counts_errors_and_drops_warmup() -> None:
    record = _record(
        [
            (0.0, 0.5, 200),  # sent in warm-up: not in latency nor counts
            (1.0, 0.1, 200),
            (1.5, 0.2, 200),
            (2.0, 0.1, 429),
            (2.5, 0.1, -1),
            (2.9, 0.1, 200),  # last end at 3.0 s
        ]
    )
    stats = summarize(record, inputs_per_request=4, warmup_s=1.0)
    assert stats.requests_sent == 5
    assert stats.requests_ok == 3
    assert stats.requests_failed == 2
    assert stats.errors_by_status == {"429": 1, "timeout": 1}
    assert stats.window_s == pytest.approx(2.0)
    # Successes finishing in the window [1.0, 3.0] s: three.
    assert stats.throughput_rps == pytest.approx(3 / 2.0)
    assert stats.inputs_per_s == pytest.approx(4 * 3 / 2.0)
    assert stats.latency is not None
    assert stats.latency.p50_ms == pytest.approx(100.0)
    assert stats.latency.max_ms == pytest.approx(200.0)


def test_summarize_all_failed_has_no_latency() -> None:
    stats = summarize(_record([(0.0, 0.1, 503), (0.1, 0.1, 503)]), 1)
    assert stats.latency is None
    assert stats.throughput_rps == 0.0
    assert stats.errors_by_status == {"503": 2}


def test_status_names() -> None:
    assert status_name(429) == "429"
    assert status_name(-1) == "timeout"
    assert status_name(-2) == "connection_error"
    assert status_name(-3) == "invalid_body"


def test_windowed_slices_by_send_time() -> None:
    record = _record([(0.1, 0.01, 200), (0.9, 0.03, 200), (1.2, 0.02, 500), (2.5, 0.05, 200)])
    windows = windowed(record, 1.0)
    assert [w.start_s for w in windows] == [0.0, 1.0, 2.0]
    assert [w.requests_ok for w in windows] == [2, 0, 1]
    assert windows[1].requests_failed == 1
    assert windows[1].p50_ms is None
    assert windows[0].p50_ms == pytest.approx(20.0)


def test_scenario_medians_and_ratios() -> None:
    ceiling = ceiling_result()
    runs = [summarize(_record([(0.0, lat, 200), (1.0, lat, 200)]), 1) for lat in (0.02, 0.04, 0.03)]
    summary = summarize_scenario("s", "closed c=1", 1, runs, ceiling)
    assert summary.p50_ms == pytest.approx(30.0)
    assert summary.ratios.p50_vs_ceiling_latency == pytest.approx(3.0)
    assert summary.ratios.inputs_per_s_vs_ceiling == pytest.approx(summary.inputs_per_s / 100.0)
    assert summary.ratios.inputs_per_s_vs_automodel == pytest.approx(summary.inputs_per_s / 200.0)
    assert summary.repeats == 3
    assert summary.ratios.p50_vs_paused_pass is None  # the ceiling has no paused figure
    table = ratio_table([summary])
    assert "closed c=1" in table


def test_a_lone_single_input_is_also_set_against_a_pass_after_a_lone_clients_pause() -> None:
    ceiling = ceiling_result(paused_single_ms=15.0)
    runs = [summarize(_record([(0.0, 0.03, 200), (1.0, 0.03, 200)]), 1)]
    single = summarize_scenario("single", "closed c=1", 1, runs, ceiling)
    multi = summarize_scenario("multi", "closed c=1", 32, runs, ceiling)
    assert single.ratios.p50_vs_ceiling_latency == pytest.approx(3.0)  # 30 ms over 10 ms
    assert single.ratios.p50_vs_paused_pass == pytest.approx(2.0)  # 30 ms over 15 ms
    assert multi.ratios.p50_vs_paused_pass is None
    top = headline([single, multi])
    assert top["lone_single_p50_vs_pass"] == pytest.approx(3.0)
    assert top["lone_single_p50_vs_paused_pass"] == pytest.approx(2.0)


def test_latency_plot_is_written(tmp_path: Path) -> None:
    runs = [summarize(_record([(0.0, 0.02, 200), (1.0, 0.03, 200)]), 1)]
    scenarios = [
        summarize_scenario("c", "closed c=1", 1, runs, None),
        summarize_scenario("o", "open", 1, runs, None, offered_rps=1.0),
    ]
    path = plot_latency_vs_throughput(scenarios, None, tmp_path / "curve.png")
    assert path.read_bytes().startswith(b"\x89PNG")


# --- soak maths ---------------------------------------------------------------


def test_linear_slope() -> None:
    assert linear_slope([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx(2.0)
    assert linear_slope([1.0], [1.0]) is None
    assert linear_slope([1.0, 1.0], [1.0, 2.0]) is None


def test_process_growth_follows_each_pid() -> None:
    mib = 2**20
    samples = [
        RssSample(0.0, [ProcessRss(1, "a", 100 * mib), ProcessRss(2, "b", 50 * mib)]),
        RssSample(1.0, [ProcessRss(1, "a", 130 * mib), ProcessRss(3, "c", 10 * mib)]),
    ]
    growth = {g.pid: g.growth_mib for g in process_growth(samples)}
    assert growth == {1: pytest.approx(30.0), 2: 0.0, 3: 0.0}
    assert samples[1].total_mib == pytest.approx(140.0)


def soak_samples(growth_mib_per_min: float, duration_s: float = 60.0) -> list[RssSample]:
    """Every 5 s: a flat process 1, and process 2 growing, fast, for the first half only
    (a cache filling to its bound), then `growth_mib_per_min` for the rest."""
    mib = 2**20
    samples = []
    for step in range(int(duration_s / 5) + 1):
        t_s = step * 5.0
        filling = min(t_s, duration_s / 2) * 1.0  # 60 MiB/min while filling
        later = max(0.0, t_s - duration_s / 2) * growth_mib_per_min / 60
        samples.append(
            RssSample(
                t_s,
                [
                    ProcessRss(1, "raylet", 100 * mib),
                    ProcessRss(2, "ingress", int((200 + filling + later) * mib)),
                ],
            )
        )
    return samples


def soak_record(statuses: list[int]) -> RunRecord:
    record = RunRecord()
    for index, status in enumerate(statuses):
        record.add(index * 0.01, 0.02, status)
    return record


def test_a_soak_passes_when_every_request_succeeds_and_memory_levels_off() -> None:
    verdict = judge(soak_record([200] * 500), soak_samples(0.0), 60.0, 10.0, 2.0)
    assert verdict.passed, verdict.reasons
    assert verdict.judged_from_s == 30.0
    assert {s.pid for s in verdict.slopes} == {1, 2}
    assert all(abs(s.slope_mib_per_min) < 0.01 for s in verdict.slopes)


def test_a_soak_fails_on_a_process_still_growing_and_names_it() -> None:
    verdict = judge(soak_record([200] * 500), soak_samples(6.0), 60.0, 10.0, 2.0)
    assert not verdict.passed
    [reason] = verdict.reasons
    assert "pid 2 (ingress)" in reason
    assert verdict.slopes[0].slope_mib_per_min == pytest.approx(6.0)


def test_a_soak_fails_on_any_failed_request() -> None:
    verdict = judge(soak_record([200] * 98 + [503, 0]), soak_samples(0.0), 60.0, 10.0, 2.0)
    assert not verdict.passed
    assert verdict.failed_requests == 2
    assert verdict.errors_by_status == {"503": 1, "0": 1}


# --- schedules ----------------------------------------------------------------


def test_poisson_schedule_is_seeded_sorted_and_bounded() -> None:
    first = poisson_arrivals_s(100.0, 5.0, seed=7)
    assert first == poisson_arrivals_s(100.0, 5.0, seed=7)
    assert first != poisson_arrivals_s(100.0, 5.0, seed=8)
    assert first == sorted(first)
    assert all(0.0 < t < 5.0 for t in first)
    assert len(poisson_arrivals_s(100.0, 5.0, seed=7, max_count=10)) == 10


def test_poisson_schedule_has_exponential_gaps() -> None:
    rate_rps, duration_s = 1000.0, 20.0
    arrivals = poisson_arrivals_s(rate_rps, duration_s, seed=11)
    expected = rate_rps * duration_s
    # Count is Poisson(20000): sd ~141, so 5 sd is a loose, seed-fixed bound.
    assert abs(len(arrivals) - expected) < 5 * expected**0.5
    gaps = np.diff(arrivals)
    assert float(np.mean(gaps)) == pytest.approx(1 / rate_rps, rel=0.05)
    # Exponential gaps: standard deviation equals the mean (CV = 1).
    assert float(np.std(gaps) / np.mean(gaps)) == pytest.approx(1.0, abs=0.05)


def test_poisson_schedule_rejects_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate_rps"):
        poisson_arrivals_s(0.0, 1.0, seed=0)


# --- payloads -----------------------------------------------------------------


def test_bodies_are_openai_shaped_and_deterministic() -> None:
    texts = make_texts(10, seed=5)
    assert texts == make_texts(10, seed=5)
    single = embedding_bodies(texts, 1)
    assert json.loads(single.bodies[0])["input"] == texts[0]
    multi = embedding_bodies(texts, 4)
    assert len(multi.bodies) == 2  # the partial last chunk is dropped
    assert json.loads(multi.bodies[1])["input"] == texts[4:8]
    assert multi.inputs_per_request == 4
    assert single.path == "/v1/embeddings"


# --- host refusal -------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://127.0.0.2:1/", "http://[::1]:8000"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert require_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://0.0.0.0:8000",
        "http://example.com",
        "http://localhost:8000",
        "ftp://127.0.0.1/",
        "127.0.0.1:8000",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(NonLoopbackTargetError):
        require_loopback(url)


def test_target_refuses_remote_endpoint() -> None:
    with pytest.raises(NonLoopbackTargetError):
        Target(url="http://192.168.1.10:8000/v1/embeddings", bodies=[b"{}"])
    assert endpoint_url("http://127.0.0.1:1/", "/v1/x") == "http://127.0.0.1:1/v1/x"


def test_cli_refuses_remote_url() -> None:
    from benchmarks.loadgen import main

    with pytest.raises(NonLoopbackTargetError):
        main(["--url", "http://203.0.113.5:8000", "--no-progress", "--max-requests", "1"])


# --- engines against a local server -------------------------------------------


@dataclass
class FakeService:
    """Counts requests; answers 429 to bodies containing `reject`, stalls on `stall`."""

    port: int = 0
    received: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    stall: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if b"stall" in body:
                await self.stall.wait()  # released only at teardown
            await asyncio.sleep(0.001)
            if b"reject" in body:
                return web.json_response({"error": {"message": "busy"}}, status=429)
            return web.json_response({"object": "list", "data": []})
        finally:
            self.in_flight -= 1


def with_service(test: Callable[[FakeService], Awaitable[None]]) -> None:
    async def main() -> None:
        service = FakeService()
        app = web.Application()
        app.router.add_post("/v1/embeddings", service.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        service.port = runner.addresses[0][1]
        try:
            await test(service)
        finally:
            service.stall.set()
            await runner.cleanup()

    asyncio.run(main())


def _target(port: int, bodies: list[bytes], validator: Validator | None = None) -> Target:
    return Target(url=f"http://127.0.0.1:{port}/v1/embeddings", bodies=bodies, validator=validator)


def test_closed_loop_sends_exactly_max_requests() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "a"}'])
        bounds = Bounds(duration_s=30.0, max_requests=50)
        record = await run_load_async(target, ClosedLoop(4), bounds, progress=False)
        assert len(record.status) == 50
        assert service.received == 50
        assert set(record.status) == {200}
        assert service.max_in_flight <= 4

    with_service(check)


def test_closed_loop_stops_at_its_duration() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "a"}'])
        record = await run_load_async(target, ClosedLoop(2), Bounds(0.2), progress=False)
        assert len(record.status) == service.received > 0
        assert all(start < 0.2 for start in record.start_s)

    with_service(check)


def test_errors_are_counted_by_status() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "a"}', b'{"input": "reject"}'])
        record = await run_load_async(
            target, ClosedLoop(1), Bounds(30.0, max_requests=10), progress=False
        )
        stats = summarize(record, 1)
        assert stats.requests_ok == 5
        assert stats.errors_by_status == {"429": 5}

    with_service(check)


def test_validator_failure_is_counted() -> None:
    async def check(service: FakeService) -> None:
        target = _target(
            service.port, [b'{"input": "a"}'], validator=lambda body: b'"data": [1' in body
        )
        record = await run_load_async(
            target, ClosedLoop(1), Bounds(30.0, max_requests=3), progress=False
        )
        assert summarize(record, 1).errors_by_status == {"invalid_body": 3}

    with_service(check)


def test_timeouts_end_the_run() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "stall"}'])
        bounds = Bounds(duration_s=30.0, max_requests=2, request_timeout_s=0.2)
        record = await run_load_async(target, ClosedLoop(2), bounds, progress=False)
        assert summarize(record, 1).errors_by_status == {"timeout": 2}

    with_service(check)


def test_connection_refused_is_counted() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def run() -> None:
        record = await run_load_async(
            _target(port, [b"{}"]), ClosedLoop(1), Bounds(30.0, max_requests=2), progress=False
        )
        assert summarize(record, 1).errors_by_status == {"connection_error": 2}

    asyncio.run(run())


def test_open_loop_follows_the_seeded_schedule() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "a"}'])
        shape = OpenLoop(rate_rps=200.0, seed=3)
        record = await run_load_async(target, shape, Bounds(0.5), progress=False)
        expected = poisson_arrivals_s(200.0, 0.5, seed=3)
        assert len(record.status) == service.received == len(expected)
        # Latency is measured from the scheduled arrival, whatever the dispatch lag.
        assert sorted(record.start_s) == pytest.approx(expected)
        assert set(record.status) == {200}

    with_service(check)


def test_open_loop_respects_max_requests() -> None:
    async def check(service: FakeService) -> None:
        target = _target(service.port, [b'{"input": "a"}'])
        record = await run_load_async(
            target, OpenLoop(rate_rps=500.0), Bounds(30.0, max_requests=20), progress=False
        )
        assert service.received == len(record.status) == 20

    with_service(check)


# --- process discovery ----------------------------------------------------------


def test_service_processes_finds_children_and_session_members() -> None:
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "print(c.pid, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert leader.stdout is not None
        child_pid = int(leader.stdout.readline())
        pids = {p.pid for p in service_processes(leader.pid)}
        assert {leader.pid, child_pid} <= pids
        assert os.getpid() not in pids
    finally:
        os.killpg(leader.pid, 15)
        leader.wait()


# --- ceiling timing and service config, with no model -----------------------------


def test_ceiling_timers_count_every_input() -> None:
    from benchmarks.ceiling import inputs_per_s, median_latency_ms

    seen: list[int] = []

    def encode(batch: list[str]) -> None:
        seen.append(len(batch))

    texts = make_texts(64, seed=0)
    assert inputs_per_s(encode, texts, 8, duration_s=0.01) > 0
    assert set(seen) == {8}
    assert median_latency_ms(encode, texts, 1) >= 0
    assert 1 in seen


class VirtualClock:
    """`time.perf_counter` and `time.sleep` of a clock that moves only when told."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.slept_s: list[float] = []

    def perf_counter(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.now_s += seconds


def test_a_paused_latency_idles_before_each_call_and_times_only_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchmarks.ceiling
    from benchmarks.ceiling import median_latency_ms

    clock = VirtualClock()
    monkeypatch.setattr(benchmarks.ceiling, "time", clock)
    calls = 0

    def encode(batch: list[str]) -> None:
        nonlocal calls
        calls += 1
        clock.now_s += 0.003

    texts = make_texts(64, seed=0)
    assert median_latency_ms(encode, texts, 1, pause_s=0.02) == pytest.approx(3.0)
    assert calls - 1 == len(clock.slept_s) > 0  # every timed call, not the warm-up, after a pause
    assert set(clock.slept_s) == {0.02}
    clock.slept_s.clear()
    assert median_latency_ms(encode, texts, 1) == pytest.approx(3.0)
    assert clock.slept_s == []


def test_config_for_port_binds_loopback(tmp_path: Path) -> None:
    import yaml

    from benchmarks.service_process import config_for_port

    source = tmp_path / "serve_config.yaml"
    source.write_text(
        "http_options:\n  host: 0.0.0.0\n  port: 8000\napplications:\n  - name: default\n"
    )
    written = yaml.safe_load(config_for_port(source, 4321, tmp_path / "copy.yaml").read_text())
    assert written["http_options"] == {"host": "127.0.0.1", "port": 4321}
    assert written["applications"] == [{"name": "default"}]


def test_the_ceiling_report_names_the_parallel_pass_reference_only_when_measured() -> None:
    without = report.ceiling_lines(ceiling_result())
    assert not any("concurrent passes" in line for line in without)
    with_it = report.ceiling_lines(ceiling_result(parallel_passes_inputs_per_s=344.4))
    assert with_it[-1].endswith("parallel_passes: 2): 344 inputs/s")


def test_the_ceiling_report_gives_the_paused_single_input_time_only_when_measured() -> None:
    latency = report.ceiling_lines(ceiling_result(paused_single_ms=13.04))[1]
    assert latency == (
        "ceiling encode latency: batch 1: 10.0 ms, batch 32: 300.0 ms; batch 1 after 5 ms idle "
        "(a lone client's rhythm): 13.0 ms"
    )
    assert report.ceiling_lines(ceiling_result())[1].endswith("batch 32: 300.0 ms")


def test_the_ceiling_report_says_where_the_ceiling_ran() -> None:
    cpu = report.ceiling_lines(ceiling_result())[0]
    assert cpu.startswith("ceiling (in-process, CPU, 2 torch threads, batch 32): ")
    gpu = report.ceiling_lines(ceiling_result(device="cuda"))[0]
    assert gpu.startswith("ceiling (in-process, cuda, float16, batch 32): ")


INTEL_AMX_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_the_machine_names_the_cpu_and_its_bfloat16_instructions() -> None:
    from benchmarks.ceiling import describe_cpu

    assert describe_cpu(INTEL_AMX_CPUINFO, 2) == (
        "Intel(R) Xeon(R) Processor, 2 CPUs, bfloat16 instructions: amx_bf16 avx512_bf16"
    )
    zen4 = "model name : AMD EPYC 9R14\nflags : avx2 avx512f avx512_bf16\n"
    assert describe_cpu(zen4, 2).endswith(
        "AMD EPYC 9R14, 2 CPUs, bfloat16 instructions: avx512_bf16"
    )
    older = "model name : AMD EPYC 7R13 Processor\nflags : avx2 fma\n"
    assert describe_cpu(older, 4).endswith("4 CPUs, bfloat16 instructions: none")


def test_the_ceiling_report_names_the_machine_when_it_was_recorded() -> None:
    machine = "Intel(R) Xeon(R) Processor, 2 CPUs, bfloat16 instructions: amx_bf16 avx512_bf16"
    assert f"machine: {machine}" in report.ceiling_lines(ceiling_result(machine=machine))
    assert not any(line.startswith("machine: ") for line in report.ceiling_lines(ceiling_result()))


@pytest.mark.parametrize(
    ("later_field", "default"), [("device", "cpu"), ("machine", ""), ("paused_single_ms", None)]
)
def test_a_ceiling_saved_before_a_later_field_reads_with_its_default(
    tmp_path: Path, later_field: str, default: str
) -> None:
    from dataclasses import asdict

    from benchmarks.ceiling import load_result

    fields = asdict(ceiling_result())
    del fields[later_field]
    path = tmp_path / "ceiling.json"
    path.write_text(json.dumps(fields))
    assert getattr(load_result(path), later_field) == default


def test_a_streamed_load_times_the_first_text_and_the_gaps_between_texts() -> None:
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(0.05)
        await response.write(b'data: {"choices":[{"text":""}]}\n\n')  # no text yet: not timed
        await asyncio.sleep(0.05)
        for word in ("one", "two", "three"):
            await response.write(b'data: {"choices":[{"text":"%s"}]}\n\n' % word.encode())
            await asyncio.sleep(0.02)
        await response.write(b"data: [DONE]\n\n")
        return response

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", events)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            target = Target(f"http://127.0.0.1:{port}/v1/completions", [b"{}"], streamed=True)
            record = await run_load_async(
                target, ClosedLoop(1), Bounds(30.0, max_requests=3), progress=False
            )
        finally:
            await runner.cleanup()
        stats = summarize(record, 1)
        assert stats.requests_ok == 3
        assert stats.first_token is not None
        assert stats.token_gap is not None
        assert 95 <= stats.first_token.p50_ms < 1_000  # the empty event is not the first text
        assert [len(stream.gaps_s) for stream in record.streams] == [2, 2, 2]
        assert 15 <= stats.token_gap.p50_ms < 500

    asyncio.run(run())
