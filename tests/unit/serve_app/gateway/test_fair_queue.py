"""The fair queue's order, weights, priority classes, fairness over time and bound (no clock)."""

from __future__ import annotations

from collections import Counter

import pytest

from serve_app.gateway.fair_queue import FairQueue, QueueFull, Share

EQUAL = Share(weight=1.0)


def drain(queue: FairQueue[str]) -> list[str]:
    order = []
    while (item := queue.pop()) is not None:
        order.append(item)
    return order


def fill(queue: FairQueue[str], arrivals: list[tuple[str, Share, float]]) -> None:
    for number, (tenant, share, cost) in enumerate(arrivals):
        queue.push(tenant, share, cost, f"{tenant}{number}")


@pytest.mark.parametrize(
    ("arrivals", "order"),
    [
        # One tenant: its own arrival order.
        ([("a", EQUAL, 1), ("a", EQUAL, 1), ("a", EQUAL, 1)], ["a0", "a1", "a2"]),
        # A burst from `a`, then one from `b`: b's first request overtakes a's backlog.
        (
            [("a", EQUAL, 1), ("a", EQUAL, 1), ("a", EQUAL, 1), ("b", EQUAL, 1)],
            ["a0", "b3", "a1", "a2"],
        ),
        # Weight 3 against 1: three of a's for each of b's.
        (
            [("a", Share(3.0), 1)] * 6 + [("b", EQUAL, 1)] * 2,
            ["a0", "a1", "a2", "b6", "a3", "a4", "a5", "b7"],
        ),
        # Cost counts: a 4-input request is worth four 1-input ones.
        (
            [("a", EQUAL, 4), ("a", EQUAL, 4), ("b", EQUAL, 1), ("b", EQUAL, 1), ("b", EQUAL, 1)],
            ["b2", "b3", "b4", "a0", "a1"],
        ),
        # A higher priority class leaves first, whatever its tags.
        ([("a", EQUAL, 1), ("a", EQUAL, 1), ("b", Share(1.0, rank=0), 5)], ["b2", "a0", "a1"]),
        # A lower one waits for the others.
        ([("low", Share(100.0, rank=2), 1), ("a", EQUAL, 1)], ["a1", "low0"]),
    ],
)
def test_order(arrivals: list[tuple[str, Share, float]], order: list[str]) -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=100)
    fill(queue, arrivals)
    assert drain(queue) == order


@pytest.mark.parametrize(("weight_a", "weight_b"), [(1.0, 1.0), (2.0, 1.0), (5.0, 1.0)])
def test_two_backlogged_tenants_share_in_proportion_to_weight_over_time(
    weight_a: float, weight_b: float
) -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=1000)
    served: Counter[str] = Counter()
    # Both keep 10 waiting; 600 sends, refilled as they leave.
    for _ in range(10):
        queue.push("a", Share(weight_a), 1, "a")
        queue.push("b", Share(weight_b), 1, "b")
    for _ in range(600):
        tenant = queue.pop()
        assert tenant is not None
        served[tenant] += 1
        queue.push(tenant, Share(weight_a if tenant == "a" else weight_b), 1, tenant)
    assert served["a"] / served["b"] == pytest.approx(weight_a / weight_b, rel=0.02)


def test_an_idle_tenant_banks_no_credit() -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=1000)
    for _ in range(100):  # `a` alone for a long time
        queue.push("a", EQUAL, 1, "a")
        queue.pop()
    for _ in range(10):
        queue.push("a", EQUAL, 1, "a")
        queue.push("b", EQUAL, 1, "b")
    # `b` arrives now: it alternates with `a`, it does not take the next hundred sends.
    assert Counter(drain(queue)[:6]) == {"a": 3, "b": 3}


def test_a_tenant_below_its_share_is_never_behind_one_above_it() -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=1000)
    for _ in range(50):
        queue.push("big", EQUAL, 1, "big")
    for _ in range(3):
        queue.pop()
    queue.push("small", EQUAL, 1, "small")
    assert queue.pop() == "small"


def test_a_full_queue_refuses_the_tenant_furthest_over_its_share() -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=3)
    fill(queue, [("big", EQUAL, 1)] * 3)
    with pytest.raises(QueueFull):
        queue.push("big", EQUAL, 1, "big-late")
    # A small tenant's request pushes out big's last one instead of being refused.
    _, pushed_out = queue.push("small", EQUAL, 1, "small")
    assert pushed_out is not None
    assert pushed_out.item == "big2"
    assert len(queue) == 3
    assert drain(queue) == ["big0", "small", "big1"]


def test_a_removed_request_leaves_nothing_behind_and_gives_back_its_place() -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=4)
    first, _ = queue.push("a", EQUAL, 1, "a0")
    second, _ = queue.push("a", EQUAL, 1, "a1")
    assert queue.remove(second)
    assert not queue.remove(second)
    assert len(queue) == 1
    # a1 never ran, so a's next request takes its place: level with b's second, not behind it.
    queue.push("b", EQUAL, 1, "b0")
    queue.push("a", EQUAL, 1, "a2")
    queue.push("b", EQUAL, 1, "b1")
    assert drain(queue) == ["a0", "b0", "a2", "b1"]
    assert queue.remove(first) is False
    assert len(queue) == 0


def test_requests_sent_without_waiting_count_against_their_tenants_share() -> None:
    queue: FairQueue[str] = FairQueue(max_waiting=10)
    queue.send_now("big", EQUAL, 1)
    queue.send_now("big", EQUAL, 1)
    queue.push("big", EQUAL, 1, "big")
    queue.push("small", EQUAL, 1, "small")
    assert drain(queue) == ["small", "big"]
