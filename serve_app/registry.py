"""The served models by API name, and the lookup every route starts with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from serve_app.config import ModelSpec, Task
from serve_app.errors import InvalidRequest, ModelNotFound

_ROUTE_FOR_TASK: dict[str, str] = {
    "embedding": "/v1/embeddings",
    "generation": "/v1/completions or /v1/chat/completions",
    "classification": "/v1/classify",
}


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
    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._models = {model.name: model for model in models}

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

    def resolve(self, name: str, task: Task) -> ServedModel:
        """The model called `name`, serving `task`: 404 if unknown, 400 if another task."""
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, list(self._models))
        if model.task != task:
            raise InvalidRequest(
                f"The model '{name}' is a {model.task} model; call {_ROUTE_FOR_TASK[model.task]}.",
                param="model",
                code="wrong_model_task",
            )
        return model
