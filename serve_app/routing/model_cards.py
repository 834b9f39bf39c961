"""Every served model's self-description, as `/readyz` and `/v1/models` show it.

Asking the models costs one call per model deployment, so the answer is kept for `max_age_s`
and concurrent askers share one refresh: a flood of `/readyz` probes costs the models one round
of calls per second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from serve_app.routing.registry import ServedModel

Cards = dict[str, dict[str, Any] | None]


class ModelCards:
    """Cards by model name; None for a model that did not answer within `timeout_s`."""

    def __init__(
        self,
        models: list[ServedModel],
        max_age_s: float = 1.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = models
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cards: Cards | None = None
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
            answers = await asyncio.gather(
                *(model.backend.describe(self._timeout_s) for model in self._models)
            )
            cards = {m.name: card for m, card in zip(self._models, answers, strict=True)}
            self._cards, self._fetched_s = cards, self._clock()
            return cards
        finally:
            self._refresh = None
