"""Replica counts from the controller's details: Serve's replica states sorted into running,
starting and gone, unknown where the controller does not answer, one read at a time."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from ray.exceptions import RayActorError
from ray.serve._private.common import ReplicaState

from serve_app.routing import replica_counts
from serve_app.routing.replica_counts import (
    RecentReplicaCounts,
    ReplicaCount,
    ServeReplicaCounts,
    replica_count,
)
from tests.support.fakes import FakeReplicaCounts

APP = "svc"


def details_with(deployments: dict[str, list[Any]]) -> dict[str, Any]:
    """The controller's details (`get_serve_details()`) of APP: each deployment's replicas by
    state, as Serve gives them (enum members or names)."""
    return {
        "applications": {
            APP: {
                "deployments": {
                    name: {
                        "replicas": [
                            {"replica_id": str(i), "state": state} for i, state in enumerate(states)
                        ]
                    }
                    for name, states in deployments.items()
                }
            }
        }
    }


def test_every_serve_replica_state_is_sorted_into_running_starting_or_gone() -> None:
    # The state names are Serve's private enum: a state added there must be placed here.
    gone = {ReplicaState.STOPPING.value, ReplicaState.STOPPED.value}
    placed = replica_counts._ROUTABLE | replica_counts._STARTING | gone
    assert {state.value for state in ReplicaState} == placed


@pytest.mark.parametrize(
    ("states", "count"),
    [
        ({}, ReplicaCount(0, 0)),
        ({"STOPPING": 1}, ReplicaCount(0, 0)),
        ({"STARTING": 1, "STOPPING": 1}, ReplicaCount(0, 1)),
        (
            {"RUNNING": 2, "PENDING_MIGRATION": 1, "UPDATING": 1, "RECOVERING": 1},
            ReplicaCount(3, 2),
        ),
        # serve.status() gives names; the schema's type says enum members: both count.
        ({ReplicaState.RUNNING: 1, ReplicaState.STARTING: 2}, ReplicaCount(1, 2)),
    ],
)
def test_replica_count_of_serve_states(states: dict[Any, int], count: ReplicaCount) -> None:
    assert replica_count(states) == count
    assert count.at_zero == (count.running + count.starting == 0)


def test_counts_by_deployment_and_unknown_for_a_deployment_not_in_the_app() -> None:
    details = details_with(
        {
            "emb": [],
            "gen": [ReplicaState.RUNNING, "STARTING", ReplicaState.STOPPING],
            "cls": ["RUNNING", "RUNNING"],
        }
    )
    counts = ServeReplicaCounts(APP, details=lambda: details)
    assert asyncio.run(counts.read(["emb", "gen", "cls", "gone"])) == {
        "emb": ReplicaCount(0, 0),
        "gen": ReplicaCount(1, 1),
        "cls": ReplicaCount(2, 0),
        "gone": None,
    }


def test_counts_are_unknown_without_the_app_or_when_the_controller_fails() -> None:
    assert asyncio.run(ServeReplicaCounts(APP, details=dict).read(["emb"])) == {"emb": None}
    no_serve = ServeReplicaCounts(APP, details=lambda: None)
    assert asyncio.run(no_serve.read(["emb"])) == {"emb": None}

    def dead_controller() -> dict[str, Any]:
        raise RayActorError()

    assert asyncio.run(ServeReplicaCounts(APP, details=dead_controller).read(["emb"])) == {
        "emb": None
    }

    def unexpected() -> dict[str, Any]:
        raise ValueError("a shape this code does not know")

    assert asyncio.run(ServeReplicaCounts(APP, details=unexpected).read(["emb"])) == {"emb": None}


def test_a_hanging_controller_costs_one_read_and_counts_are_unknown_until_it_answers() -> None:
    release = threading.Event()
    calls = []

    def hanging() -> dict[str, Any]:
        calls.append(1)
        release.wait(5)
        return details_with({"emb": ["RUNNING"]})

    counts = ServeReplicaCounts(APP, timeout_s=0.1, details=hanging)

    async def scenario() -> None:
        first = await asyncio.gather(*(counts.read(["emb"]) for _ in range(10)))
        assert all(answer == {"emb": None} for answer in first)
        assert await counts.read(["emb"]) == {"emb": None}
        assert len(calls) == 1  # the askers after the timeout wait on the same read
        release.set()
        assert await counts.read(["emb"]) == {"emb": ReplicaCount(1, 0)}
        assert await counts.read(["emb"]) == {"emb": ReplicaCount(1, 0)}
        assert len(calls) == 2  # a read that answered is not reused

    asyncio.run(scenario())


class FailingCounts:
    async def read(self, deployments: Any) -> dict[str, ReplicaCount | None]:
        raise RuntimeError("controller answer did not parse")


def test_recent_counts_answer_at_once_and_read_again_in_the_background_when_stale() -> None:
    async def scenario() -> None:
        now = [0.0]
        fake = FakeReplicaCounts({"a": ReplicaCount(running=2, starting=1)})
        recent = RecentReplicaCounts(fake, ["a", "b"], max_age_s=2.0, clock=lambda: now[0])
        assert recent.running("a") is None  # nothing read yet: unknown, and one read starts
        assert recent.running("a") is None
        await asyncio.sleep(0.05)
        assert (recent.running("a"), recent.running("b"), fake.reads) == (2, None, 1)
        fake.counts["a"] = ReplicaCount(running=3, starting=0)
        now[0] = 1.9
        assert recent.running("a") == 2
        await asyncio.sleep(0.05)
        assert fake.reads == 1  # still fresh
        now[0] = 2.1
        assert recent.running("a") == 2  # stale: the last count now, the new one after a read
        await asyncio.sleep(0.05)
        assert (recent.running("a"), fake.reads) == (3, 2)

    asyncio.run(scenario())


def test_recent_counts_keep_the_last_counts_when_a_read_fails() -> None:
    async def scenario() -> None:
        now = [0.0]
        recent = RecentReplicaCounts(
            FakeReplicaCounts({"a": ReplicaCount(1, 0)}), ["a"], clock=lambda: now[0]
        )
        recent.running("a")
        await asyncio.sleep(0.05)
        recent._counts = FailingCounts()
        now[0] = 5.0
        assert recent.running("a") == 1
        await asyncio.sleep(0.05)
        assert recent.running("a") == 1

    asyncio.run(scenario())
