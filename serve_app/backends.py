"""How the ingress reaches a model: a small async contract, and its Ray handle implementation.

Ray's failures become domain errors here, once, so routes never see Ray exceptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
)

from deployments.embedding_model import EmbeddingBatch
from serve_app.errors import Overloaded, ServiceUnavailable

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ModelBackend(Protocol):
    """What every model deployment answers, whatever its task."""

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        """The model's self-description, or None when it does not answer within `timeout_s`."""
        ...


class EmbeddingBackend(ModelBackend, Protocol):
    async def embed(self, texts: list[str]) -> EmbeddingBatch: ...


class HandleBackend:
    """A model deployment behind a Serve `DeploymentHandle`."""

    def __init__(self, handle: Any, model_name: str) -> None:
        self._handle = handle
        self._model_name = model_name

    async def _call(self, method: str, *args: Any) -> Any:
        return await _translate_failures(
            getattr(self._handle, method).remote(*args), self._model_name
        )

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        try:
            card: dict[str, Any] = await asyncio.wait_for(self._handle.describe.remote(), timeout_s)
        except (TimeoutError, RayError, RayServeException) as exc:
            logger.info("model %s is not answering: %r", self._model_name, exc)
            return None
        return card

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        batch: EmbeddingBatch = await self._call("embed", texts)
        return batch


async def _translate_failures(call: Awaitable[T], model_name: str) -> T:
    try:
        return await call
    except BackPressureError as exc:
        raise Overloaded(
            f"The model '{model_name}' is at capacity; retry later.",
            retry_after_s=getattr(exc, "retry_after_s", None) or 1.0,
        ) from exc
    except (RayActorError, DeploymentUnavailableError) as exc:
        raise ServiceUnavailable(
            f"The model '{model_name}' is temporarily unavailable; retry later."
        ) from exc
