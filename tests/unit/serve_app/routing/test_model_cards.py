"""Model cards: one round of describe calls serves every caller for a second, and a model at
zero replicas is never asked (asking would start a replica)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_app.config import ModelSpec
from serve_app.routing.model_cards import CardState, ModelCard, ModelCards, readiness
from serve_app.routing.registry import ServedModel
from serve_app.routing.replica_counts import ReplicaCount
from tests.support.fakes import FakeReplicaCounts

CARD = {"task": "embedding", "dimensions": 384}
AT_ZERO = ReplicaCount(running=0, starting=0)
RUNNING = ReplicaCount(running=1, starting=0)
STARTING = ReplicaCount(running=0, starting=1)


class SlowDescriber:
    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer = answer
        self.calls = 0

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        self.calls += 1
        await asyncio.sleep(0.05)
        return self.answer


def served(name: str, backend: SlowDescriber) -> ServedModel:
    return ServedModel(ModelSpec(name=name, task="embedding", path="/unused"), backend)


def test_concurrent_askers_share_one_refresh_and_it_is_kept_for_max_age() -> None:
    ready, waiting = SlowDescriber({"task": "embedding"}), SlowDescriber(None)
    counts = FakeReplicaCounts({"a": RUNNING, "b": RUNNING})
    now = [0.0]
    cards = ModelCards([served("a", ready), served("b", waiting)], counts, clock=lambda: now[0])

    async def scenario() -> None:
        answers = await asyncio.gather(*(cards.get() for _ in range(50)))
        expected = {
            "a": ModelCard("ready", {"task": "embedding"}),
            "b": ModelCard("waiting", None),
        }
        assert all(answer == expected for answer in answers)
        assert (ready.calls, waiting.calls, counts.reads) == (1, 1, 1)
        now[0] += 0.5
        await cards.get()
        assert (ready.calls, counts.reads) == (1, 1)
        now[0] += 0.6
        await cards.get()
        assert (ready.calls, counts.reads) == (2, 2)

    asyncio.run(scenario())


def test_a_caller_that_leaves_does_not_cancel_the_refresh_others_wait_for() -> None:
    backend = SlowDescriber({"task": "embedding"})
    cards = ModelCards([served("a", backend)])

    async def scenario() -> None:
        leaver = asyncio.ensure_future(cards.get())
        stayer = asyncio.ensure_future(cards.get())
        await asyncio.sleep(0.01)
        leaver.cancel()
        assert await stayer == {"a": ModelCard("ready", {"task": "embedding"})}
        assert backend.calls == 1

    asyncio.run(scenario())


def test_a_model_at_zero_is_never_asked_and_shows_its_last_card() -> None:
    backend = SlowDescriber(CARD)
    counts = FakeReplicaCounts({"a": RUNNING})
    now = [0.0]
    cards = ModelCards([served("a", backend)], counts, clock=lambda: now[0])

    async def scenario() -> None:
        assert await cards.get() == {"a": ModelCard("ready", CARD)}
        counts.counts["a"] = AT_ZERO
        for _ in range(5):
            now[0] += 1.0
            assert await cards.get() == {"a": ModelCard("scaled_to_zero", CARD)}
        assert (backend.calls, counts.reads) == (1, 6)

    asyncio.run(scenario())


def test_a_model_at_zero_that_never_ran_has_no_card() -> None:
    backend = SlowDescriber(CARD)
    cards = ModelCards([served("a", backend)], FakeReplicaCounts({"a": AT_ZERO}))
    assert asyncio.run(cards.get()) == {"a": ModelCard("scaled_to_zero", None)}
    assert backend.calls == 0


@pytest.mark.parametrize(
    ("count", "answer", "state"),
    [
        # Unknown (controller unreachable): asked, as before counts existed.
        (None, CARD, "ready"),
        (None, None, "waiting"),
        # A starting replica will answer; a call now only waits for it, starting nothing.
        (STARTING, None, "waiting"),
        (RUNNING, CARD, "ready"),
    ],
)
def test_a_model_with_replicas_or_an_unknown_count_is_asked(
    count: ReplicaCount | None, answer: dict[str, Any] | None, state: CardState
) -> None:
    backend = SlowDescriber(answer)
    cards = ModelCards([served("a", backend)], FakeReplicaCounts({"a": count}))
    assert asyncio.run(cards.get()) == {"a": ModelCard(state, answer)}
    assert backend.calls == 1


def test_counts_are_read_by_deployment_name() -> None:
    spec = ModelSpec(name="org/emb", task="embedding", path="/unused", deployment="emb-small")
    backend = SlowDescriber(CARD)
    cards = ModelCards([ServedModel(spec, backend)], FakeReplicaCounts({"emb-small": AT_ZERO}))
    assert asyncio.run(cards.get())["org/emb"].state == "scaled_to_zero"
    assert backend.calls == 0


def test_readiness_counts_a_model_at_zero_as_ready_and_lists_it() -> None:
    cards = {"emb": ModelCard("scaled_to_zero", None), "gen": ModelCard("ready", CARD)}
    assert readiness(cards) == (
        200,
        {"status": "ready", "models": ["emb", "gen"], "scaled_to_zero": ["emb"]},
    )


def test_readiness_waits_for_a_model_with_replicas_that_does_not_answer() -> None:
    cards = {
        "emb": ModelCard("scaled_to_zero", CARD),
        "gen": ModelCard("waiting", None),
        "cls": ModelCard("ready", CARD),
    }
    assert readiness(cards) == (503, {"status": "waiting", "waiting_for": ["gen"]})


def test_a_cards_fields_never_hide_its_state() -> None:
    card = ModelCard("scaled_to_zero", {**CARD, "ready": True, "state": "x"})
    assert card.fields() == {**CARD, "ready": False, "state": "scaled_to_zero"}
    assert ModelCard("waiting", None).fields() == {"ready": False, "state": "waiting"}
