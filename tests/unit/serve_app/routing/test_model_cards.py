"""Model cards: one round of describe calls serves every caller for a second."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_app.config import ModelSpec
from serve_app.routing.model_cards import ModelCards
from serve_app.routing.registry import ServedModel


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
    now = [0.0]
    cards = ModelCards([served("a", ready), served("b", waiting)], clock=lambda: now[0])

    async def scenario() -> None:
        answers = await asyncio.gather(*(cards.get() for _ in range(50)))
        assert all(answer == {"a": {"task": "embedding"}, "b": None} for answer in answers)
        assert (ready.calls, waiting.calls) == (1, 1)
        now[0] += 0.5
        await cards.get()
        assert ready.calls == 1
        now[0] += 0.6
        await cards.get()
        assert ready.calls == 2

    asyncio.run(scenario())


def test_a_caller_that_leaves_does_not_cancel_the_refresh_others_wait_for() -> None:
    backend = SlowDescriber({"task": "embedding"})
    cards = ModelCards([served("a", backend)])

    async def scenario() -> None:
        leaver = asyncio.ensure_future(cards.get())
        stayer = asyncio.ensure_future(cards.get())
        await asyncio.sleep(0.01)
        leaver.cancel()
        assert await stayer == {"a": {"task": "embedding"}}
        assert backend.calls == 1

    asyncio.run(scenario())
