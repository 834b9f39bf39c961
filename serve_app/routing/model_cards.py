"""Every served model's self-description, as `/readyz` and `/v1/models` show it.

Asking the models costs one call per model deployment, so the answer is kept for `max_age_s`
and concurrent askers share one refresh: a flood of `/readyz` probes costs the models one round
of calls per second at most. A model at zero replicas is not asked (the call would start a
replica, and probes would keep it awake forever): it shows the last card it gave, if any.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from serve_app.routing.registry import ServedModel
from serve_app.routing.replica_counts import ReplicaCount, ReplicaCounts, UnknownReplicaCounts

CardState = Literal["ready", "waiting", "scaled_to_zero"]


@dataclass(frozen=True)
class ModelCard:
    """`card` is None for a model that did not answer, or one at zero that never answered."""

    state: CardState
    card: dict[str, Any] | None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def fields(self) -> dict[str, Any]:
        """The model's `/v1/models` fields: the card, then whether it answers now (last, so no
        card field hides it)."""
        return {**(self.card or {}), "ready": self.ready, "state": self.state}


Cards = dict[str, ModelCard]


class ModelCards:
    """Cards by model name. A model whose replica count is unknown is asked, as one with
    replicas is; one that does not answer within `timeout_s` is waiting."""

    def __init__(
        self,
        models: list[ServedModel],
        replica_counts: ReplicaCounts | None = None,
        max_age_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = models
        self._replica_counts = replica_counts or UnknownReplicaCounts()
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cards: Cards | None = None
        self._last_answers: dict[str, dict[str, Any]] = {}
        self._fetched_s = 0.0
        self._refresh: asyncio.Future[Cards] | None = None

    async def get(self) -> Cards:
        if self._cards is not None and self._clock() - self._fetched_s < self._max_age_s:
            return self._cards
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._fetch())
        # Shielded: a caller that goes away does not cancel the refresh the others wait for.
        return await asyncio.shield(self._refresh)

    async def _fetch(self) -> Cards:
        try:
            counts = await self._replica_counts.read(
                [model.spec.deployment_name for model in self._models]
            )
            answers = await asyncio.gather(
                *(self._card(model, counts[model.spec.deployment_name]) for model in self._models)
            )
            cards = {model.name: card for model, card in zip(self._models, answers, strict=True)}
            self._cards, self._fetched_s = cards, self._clock()
            return cards
        finally:
            self._refresh = None

    async def _card(self, model: ServedModel, count: ReplicaCount | None) -> ModelCard:
        if count is not None and count.at_zero:
            return ModelCard("scaled_to_zero", self._last_answers.get(model.name))
        answer = await model.backend.describe(self._timeout_s)
        if answer is None:
            return ModelCard("waiting", None)
        self._last_answers[model.name] = answer
        return ModelCard("ready", answer)


def readiness(cards: Cards) -> tuple[int, dict[str, Any]]:
    """`/readyz`'s status code and body: ready unless a model with replicas (or an unknown
    count) does not answer; a model at zero is ready too, since a request starts it."""
    waiting = [name for name, card in cards.items() if card.state == "waiting"]
    if waiting:
        return 503, {"status": "waiting", "waiting_for": waiting}
    at_zero = sorted(name for name, card in cards.items() if card.state == "scaled_to_zero")
    return 200, {"status": "ready", "models": sorted(cards), "scaled_to_zero": at_zero}
