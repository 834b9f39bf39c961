"""Resident memory of a service's processes, found by ancestry, never by name.

A `serve run` started in its own session owns Ray's whole local instance: its
descendants, plus anything that left the tree but kept the session id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

_LABEL_CHARS = 96


@dataclass(frozen=True)
class ProcessRss:
    pid: int
    label: str
    rss_bytes: int
    # Proportional set size: shared pages split between sharers, so PSS sums
    # to the real footprint where RSS sums count shared libraries many times.
    pss_bytes: int | None = None


def _same_session(pid: int, session_id: int) -> bool:
    try:
        return os.getsid(pid) == session_id
    except OSError:
        return False


def service_processes(root_pid: int) -> list[psutil.Process]:
    """The root, its descendants, and every process in the session `root_pid` leads.

    A session id is the pid of its leader and is not reused while the session
    has members, so the scan is safe even after the root itself has exited.
    """
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(root_pid)
        found[root.pid] = root
        found.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass  # the root has exited; its session may still have members
    for proc in psutil.process_iter():
        if proc.pid not in found and _same_session(proc.pid, root_pid):
            found[proc.pid] = proc
    return sorted(found.values(), key=lambda p: p.pid)


def process_label(proc: psutil.Process) -> str:
    """Ray sets titles such as `ray::ServeReplica:...`; fall back to the name."""
    try:
        cmdline = proc.cmdline()
        return (" ".join(cmdline) if cmdline else proc.name())[:_LABEL_CHARS]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def sample_rss(processes: Iterable[psutil.Process], with_pss: bool = True) -> list[ProcessRss]:
    """RSS (and PSS where readable) of each process still alive."""
    samples: list[ProcessRss] = []
    for proc in processes:
        try:
            rss = proc.memory_info().rss
            pss = getattr(proc.memory_full_info(), "pss", None) if with_pss else None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        samples.append(ProcessRss(proc.pid, process_label(proc), rss, pss))
    return samples


def sample_service_rss(root_pid: int) -> list[ProcessRss]:
    return sample_rss(service_processes(root_pid))


def total_mib(samples: Iterable[ProcessRss]) -> float:
    return sum(s.rss_bytes for s in samples) / 2**20


def total_pss_mib(samples: Iterable[ProcessRss]) -> float | None:
    pss = [s.pss_bytes for s in samples]
    if not pss or any(p is None for p in pss):
        return None
    return sum(p for p in pss if p is not None) / 2**20
