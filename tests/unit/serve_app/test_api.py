"""The probes over a model at zero replicas: `/readyz` and `/v1/models` answer without asking
it (asking would start a replica), and ask it again once it has replicas."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from serve_app.api import build_api
from serve_app.config import AppArgs, ModelSpec
from serve_app.routing.registry import ModelRegistry, ServedModel
from serve_app.routing.replica_counts import ReplicaCount
from tests.support.fakes import FAKE_DIMENSIONS, FakeEmbeddingBackend, FakeReplicaCounts

AT_ZERO = ReplicaCount(running=0, starting=0)
RUNNING = ReplicaCount(running=1, starting=0)


class DescribeCountingBackend(FakeEmbeddingBackend):
    def __init__(self, *, ready: bool = True) -> None:
        super().__init__(ready=ready)
        self.described = 0

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        self.described += 1
        return await super().describe(timeout_s)


def client_for(
    backends: dict[str, DescribeCountingBackend], counts: FakeReplicaCounts
) -> TestClient:
    models = [
        ServedModel(ModelSpec(name=name, task="embedding", path="/unused"), backend)
        for name, backend in backends.items()
    ]
    api = build_api(
        ModelRegistry(models), AppArgs(models=[m.spec for m in models]), model_replica_counts=counts
    )
    return TestClient(api)


def test_probes_answer_for_a_model_at_zero_without_asking_it() -> None:
    at_zero, running = DescribeCountingBackend(), DescribeCountingBackend()
    client = client_for({"emb": at_zero, "gen": running}, FakeReplicaCounts({"emb": AT_ZERO}))
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": ["emb", "gen"], "scaled_to_zero": ["emb"]}
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert (cards["emb"]["ready"], cards["emb"]["state"]) == (False, "scaled_to_zero")
    assert "dimensions" not in cards["emb"]  # it never ran, so no card
    assert (cards["gen"]["ready"], cards["gen"]["state"]) == (True, "ready")
    assert (at_zero.described, running.described) == (0, 1)


def test_a_model_back_at_zero_keeps_the_card_it_gave_while_it_ran() -> None:
    backend = DescribeCountingBackend()
    counts = FakeReplicaCounts({"emb": RUNNING})
    client = client_for({"emb": backend}, counts)
    assert client.get("/v1/models").json()["data"][0]["dimensions"] == FAKE_DIMENSIONS
    counts.counts["emb"] = AT_ZERO
    time.sleep(1.05)  # past the cards' one-second age
    [card] = client.get("/v1/models").json()["data"]
    assert (card["ready"], card["state"], card["dimensions"]) == (
        False,
        "scaled_to_zero",
        FAKE_DIMENSIONS,
    )
    assert backend.described == 1


def test_a_model_with_replicas_that_does_not_answer_keeps_readyz_waiting() -> None:
    backend = DescribeCountingBackend(ready=False)
    client = client_for({"emb": backend}, FakeReplicaCounts({"emb": RUNNING}))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "waiting", "waiting_for": ["emb"]}
    assert backend.described == 1
