"""Forward-pass threads give way to request handling: they run at a higher niceness than the
thread that starts them, and only they do."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from deployments.replica.base import lower_thread_priority, thread_niceness

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread niceness is Linux only"
)


def test_a_pool_thread_runs_lowered_and_its_caller_does_not() -> None:
    before = thread_niceness()
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(10,)) as pool:
        inside = pool.submit(thread_niceness).result()
    assert inside == min(19, before + 10)
    assert thread_niceness() == before


def test_niceness_stops_at_the_lowest_priority() -> None:
    with ThreadPoolExecutor(1, initializer=lower_thread_priority, initargs=(10,)) as pool:
        pool.submit(lower_thread_priority, 30).result()
        assert pool.submit(thread_niceness).result() == 19
