"""CPU time the service's processes spend during a run, per process role.

Throughput ratios say how far the service is from the model's limit; this says where the rest of
the machine went (model replica, ingress, proxy, Ray's own processes), as milliseconds of CPU per
answered request. It also explains open-loop tails: a lightly loaded service runs small forward
passes that cost more CPU per input, so "70% of the best throughput" can keep the cores far busier
than 70%.

Processes are found by ancestry and session (as for memory), never by name. A process that exits
during a run loses its share, and one that starts during it counts from zero.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

from benchmarks.rss import process_label

# Ray titles its workers `ray::ServeReplica:<app>:<deployment>`; the deployment names the role.
_REPLICA_PREFIX = "ray::ServeReplica:"

# (pid, process start time): a pid reused by a new process is a different process.
ProcessKey = tuple[int, float]
CpuSnapshot = dict[ProcessKey, tuple[str, float]]


def role(label: str) -> str:
    """A short, stable name for a process from its title or command line."""
    first = label.split(" ", 1)[0]
    if first.startswith(_REPLICA_PREFIX):
        return first.rsplit(":", 1)[-1]
    if first.startswith("ray::"):
        return first.removeprefix("ray::")
    return os.path.basename(first) or "?"


def cpu_snapshot(processes: Iterable[psutil.Process]) -> CpuSnapshot:
    """User plus system CPU seconds of each process still alive, by (pid, start time)."""
    snapshot: CpuSnapshot = {}
    for proc in processes:
        try:
            times = proc.cpu_times()
            key = (proc.pid, proc.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        snapshot[key] = (role(process_label(proc)), times.user + times.system)
    return snapshot


def cpu_by_role(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed over the processes of each role."""
    spent: defaultdict[str, float] = defaultdict(float)
    for key, (name, seconds) in after.items():
        start = before.get(key, (name, 0.0))[1]
        spent[name] += max(0.0, seconds - start)
    return dict(spent)


@dataclass(frozen=True)
class RunCpu:
    """One load run: the service's CPU seconds by role, and every request answered meanwhile
    (warm-up included, since the CPU was measured over the whole run)."""

    seconds_by_role: dict[str, float]
    answered: int


def ms_per_request(runs: Sequence[RunCpu]) -> tuple[float | None, dict[str, float]]:
    """Total service CPU and each role's share, in ms per answered request over all `runs`.

    Roles come largest first; `None` and nothing when no CPU was measured or nothing answered.
    """
    answered = sum(run.answered for run in runs)
    if answered <= 0:
        return None, {}
    total: defaultdict[str, float] = defaultdict(float)
    for run in runs:
        for name, seconds in run.seconds_by_role.items():
            total[name] += seconds
    by_role = {
        name: seconds * 1e3 / answered
        for name, seconds in sorted(total.items(), key=lambda item: -item[1])
    }
    return sum(by_role.values()), by_role
