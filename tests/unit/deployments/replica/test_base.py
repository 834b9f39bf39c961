"""Forward-pass threads give way to request handling: they run at a higher niceness than the
thread that starts them, and only they do; and a replica whose torch threads were left to spin
says how to stop it."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployments.replica.base import (
    MODEL_RUNTIME_ENV,
    ModelReplica,
    lower_thread_priority,
    spinning_threads_warning,
    thread_niceness,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread niceness is Linux only"
)


@linux_only
def test_a_pool_thread_runs_lowered_and_its_caller_does_not() -> None:
    before = thread_niceness()
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(10,)) as pool:
        inside = pool.submit(thread_niceness).result()
    assert inside == min(19, before + 10)
    assert thread_niceness() == before


@linux_only
def test_niceness_stops_at_the_lowest_priority() -> None:
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(10,)) as pool:
        pool.submit(lower_thread_priority, 30).result()
        assert pool.submit(thread_niceness).result() == 19


def test_a_replica_without_the_wait_policy_is_told_where_to_set_it() -> None:
    warning = spinning_threads_warning({"PATH": "/usr/bin"})
    assert warning is not None
    assert "ray_actor_options" in warning
    assert "runtime_env: {env_vars: {OMP_WAIT_POLICY: PASSIVE}}" in warning


def test_the_default_runtime_env_or_a_deliberate_value_is_not_warned_about() -> None:
    assert spinning_threads_warning(MODEL_RUNTIME_ENV["env_vars"]) is None
    assert spinning_threads_warning({"OMP_WAIT_POLICY": "ACTIVE"}) is None


class _EchoReplica(ModelReplica):
    task = "embedding"


def test_a_replica_starting_its_passes_without_the_policy_logs_the_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    replica = _EchoReplica()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        replica._start_passes("echo", None, 1, lambda items: items, "warm-up")
    replica._forward_pool.shutdown()
    assert [r.getMessage() for r in caplog.records] == [spinning_threads_warning({})]
