"""How the ingress reaches a model: a small async contract, and its Ray handle implementation.

Ray's failures become domain errors here, once, so routes never see Ray exceptions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ray.exceptions import RayActorError, RayError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
)

from deployments.contract import (
    Classification,
    EmbeddingBatch,
    GenerationChunk,
    GenerationRequest,
    GenerationResult,
    InputRejected,
    RelevanceScore,
)
from serve_app.embedding.coalescer import CoalescerFull, EmbeddingCoalescer
from serve_app.errors import InvalidRequest, Overloaded, ServiceUnavailable

T = TypeVar("T")
# Serve's logger: lines land in the ingress replica's own log file (logs/serve/replica_*.log),
# tagged with its replica id, where operators look; other loggers end up in worker-*.err.
logger = logging.getLogger("ray.serve")
RETRY_LOG_MESSAGE = "died during a call; retrying once"


class ModelBackend(Protocol):
    """What every model deployment answers, whatever its task."""

    async def describe(self, timeout_s: float) -> dict[str, Any] | None:
        """The model's self-description, or None when it does not answer within `timeout_s`."""
        ...


class EmbeddingBackend(ModelBackend, Protocol):
    async def embed(self, texts: list[str]) -> EmbeddingBatch: ...


class GenerationBackend(ModelBackend, Protocol):
    async def generate(self, request: GenerationRequest) -> list[GenerationResult]: ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...


class ClassificationBackend(ModelBackend, Protocol):
    async def classify(self, texts: list[str]) -> list[Classification]: ...


class RerankBackend(ModelBackend, Protocol):
    async def rerank(self, query: str, documents: list[str]) -> list[RelevanceScore]: ...


class HandleBackend:
    """A model deployment behind a Serve `DeploymentHandle`."""

    def __init__(
        self, handle: Any, model_name: str, coalescer: EmbeddingCoalescer | None = None
    ) -> None:
        self._handle = handle
        self._model_name = model_name
        self._coalescer = coalescer

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

    async def _retry_once(self, call: Callable[[], Awaitable[T]]) -> T:
        """Idempotent calls are sent again once when their replica died under them."""
        try:
            return await call()
        except RayActorError:
            logger.warning("a replica of %s %s", self._model_name, RETRY_LOG_MESSAGE)
            return await call()

    async def embed(self, texts: list[str]) -> EmbeddingBatch:
        coalescer = self._coalescer
        if coalescer is None:
            return await _translate_failures(
                self._retry_once(lambda: self._handle.embed.remote(texts)), self._model_name
            )
        return await _translate_failures(
            self._retry_once(lambda: coalescer.send(self._handle, texts)), self._model_name
        )

    async def generate(self, request: GenerationRequest) -> list[GenerationResult]:
        results: list[GenerationResult] = await self._call("generate", request)
        return results

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        responses = self._handle.options(stream=True).stream.remote(request)
        try:
            while True:
                try:
                    chunk: GenerationChunk = await _translate_failures(
                        responses.__anext__(), self._model_name
                    )
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            # Closed early (the client went away): stop the replica's generation for it too.
            responses.cancel()

    async def classify(self, texts: list[str]) -> list[Classification]:
        results: list[Classification] = await _translate_failures(
            self._retry_once(lambda: self._handle.classify.remote(texts)), self._model_name
        )
        return results

    async def rerank(self, query: str, documents: list[str]) -> list[RelevanceScore]:
        scores: list[RelevanceScore] = await _translate_failures(
            self._retry_once(lambda: self._handle.rerank.remote(query, documents)),
            self._model_name,
        )
        return scores


async def _translate_failures(call: Awaitable[T], model_name: str) -> T:
    try:
        return await call
    except BackPressureError as exc:
        raise Overloaded(
            f"The model '{model_name}' is at capacity; retry later.",
            retry_after_s=getattr(exc, "retry_after_s", None) or 1.0,
        ) from exc
    except CoalescerFull as exc:
        raise Overloaded(f"The model '{model_name}' is at capacity; retry later.") from exc
    except (RayActorError, DeploymentUnavailableError) as exc:
        raise ServiceUnavailable(
            f"The model '{model_name}' is temporarily unavailable; retry later."
        ) from exc
    except InputRejected as exc:
        # Ray re-raises a replica's exception as a subclass of it; the original is `cause`.
        cause = getattr(exc, "cause", exc)
        raise InvalidRequest(
            getattr(cause, "message", str(exc)), param=getattr(cause, "param", None)
        ) from exc
