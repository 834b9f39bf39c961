from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from autoscaling.replica_stats import ReplicaStats
from serve_app.errors import Overloaded
from serve_app.routing.fallback import FallbackRouter
from serve_app.routing.registry import ServedModel


@dataclass(frozen=True)
class Spec:
    name: str
    fallback: str | None = None
    latency_target_ms: float | None = None


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def served(name: str, **spec: object) -> ServedModel:
    return ServedModel(spec=Spec(name, **spec), backend=None)  # type: ignore[arg-type]


PRIMARY = served("big", fallback="small", latency_target_ms=100)
SMALL = served("small")


def router(clock: Clock | None = None) -> tuple[FallbackRouter, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    models = {m.name: m for m in (PRIMARY, SMALL)}
    return FallbackRouter(models, lambda *e: events.append(e), clock or Clock()), events


def test_latency_window_needs_enough_recent_samples() -> None:
    window = ReplicaStats(window_s=10)
    window.observe(0.1, 0.0, now=0)
    window.observe(0.2, 0.0, now=1)
    assert window.latency_s(95, now=2, min_samples=3) is None
    window.observe(0.3, 0.0, now=2)
    assert window.latency_s(95, now=2, min_samples=3) == pytest.approx(0.3)
    assert window.latency_s(95, now=20, min_samples=3) is None  # aged out


def test_healthy_primary_answers() -> None:
    fallback_router, events = router()

    async def call(model: ServedModel) -> str:
        return model.name

    result, routed = asyncio.run(fallback_router.call(PRIMARY, call))
    assert (result, routed.model.name, routed.fallback_reason) == ("big", "big", None)
    assert events == []


def test_full_primary_queue_goes_to_the_fallback() -> None:
    fallback_router, events = router()

    async def call(model: ServedModel) -> str:
        if model.name == "big":
            raise Overloaded("full")
        return model.name

    result, routed = asyncio.run(fallback_router.call(PRIMARY, call))
    assert (result, routed.fallback_reason) == ("small", "queue_full")
    assert events == [("big", "small", "queue_full")]


def test_both_full_is_a_503() -> None:
    fallback_router, _ = router()

    async def call(model: ServedModel) -> str:
        raise Overloaded(f"{model.name} full")

    with pytest.raises(Overloaded, match="small full"):
        asyncio.run(fallback_router.call(PRIMARY, call))


def test_slow_primary_sends_requests_to_the_fallback_until_its_samples_age_out() -> None:
    clock = Clock()
    fallback_router, events = router(clock)

    async def call(model: ServedModel) -> str:
        clock.now_s += 0.5 if model.name == "big" else 0.01
        return model.name

    async def scenario() -> list[str]:
        answers = []
        for _ in range(10):
            result, _ = await fallback_router.call(PRIMARY, call)
            answers.append(result)
        return answers

    answers = asyncio.run(scenario())
    assert answers[:5] == ["big"] * 5  # five slow samples are needed to judge
    assert answers[5:] == ["small"] * 5
    assert events[0] == ("big", "small", "latency")
    clock.now_s += 11  # the primary's slow samples age out: it gets another chance
    result, _ = asyncio.run(fallback_router.call(PRIMARY, call))
    assert result == "big"


def test_a_model_without_fallback_propagates_overload() -> None:
    fallback_router, _ = router()

    async def call(model: ServedModel) -> str:
        raise Overloaded("full")

    with pytest.raises(Overloaded):
        asyncio.run(fallback_router.call(SMALL, call))
