"""The served models by API name, and the lookup every route starts with."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from serve_app.config import ModelSpec
from serve_app.errors import InvalidRequest, ModelNotFound
from serve_app.protocol import TASK_PATHS, Task
from serve_app.routing.aliases import AliasSpec


@dataclass(frozen=True)
class ServedModel:
    spec: ModelSpec
    backend: Any

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> Task:
        return self.spec.task


class ModelRegistry:
    """Served models by name, plus aliases that pick one of several models per request.

    `rng` draws alias targets; pass a seeded `random.Random` to make the split reproducible.
    """

    def __init__(
        self,
        models: Iterable[ServedModel],
        aliases: Iterable[AliasSpec] = (),
        rng: random.Random | None = None,
    ) -> None:
        self._models = {model.name: model for model in models}
        self._aliases = {alias.name: alias for alias in aliases}
        self._rng = rng or random.Random()

    def with_aliases(self, aliases: Iterable[AliasSpec]) -> ModelRegistry:
        """This registry's models with `aliases` added (AppArgs has validated them)."""
        return ModelRegistry(
            self._models.values(), [*self._aliases.values(), *aliases], rng=self._rng
        )

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

    def alias_cards(self, created: int) -> list[dict[str, object]]:
        """Each alias as /v1/models lists it (targets share one task, checked by AppArgs)."""
        return [
            alias.card(self._models[alias.targets[0].model].task, created)
            for alias in self._aliases.values()
        ]

    def resolve(self, name: str, task: Task) -> ServedModel:
        """The model called `name` (an alias picks one by weight), serving `task`.

        404 if the name is unknown, 400 if it serves another task.
        """
        alias = self._aliases.get(name)
        if alias is not None:
            name = alias.pick(self._rng)
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, [*self._models, *self._aliases])
        if model.task != task:
            routes = " or ".join(TASK_PATHS[model.task])
            raise InvalidRequest(
                f"The model '{name}' is a {model.task} model; call {routes}.",
                param="model",
                code="wrong_model_task",
            )
        return model
