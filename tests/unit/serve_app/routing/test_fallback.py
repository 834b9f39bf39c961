from __future__ import annotations

import asyncio

import pytest

from autoscaling.replica_stats import ReplicaStats
from serve_app.config import ModelSpec
from serve_app.errors import Overloaded
from serve_app.routing.admission import PredictedMiss
from serve_app.routing.fallback import FallbackRouter
from serve_app.routing.registry import ServedModel


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def served(name: str, **spec: object) -> ServedModel:
    fields = {"name": name, "task": "embedding", "package": "unused", **spec}
    return ServedModel(spec=ModelSpec.model_validate(fields), backend=None)


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


async def busy(fallback_router: FallbackRouter, clock: Clock, model: ServedModel, n: int) -> None:
    """`n` calls on `model` one after another, 0.1 s each on the fake clock: a service time of
    0.1 s."""

    async def call(served: ServedModel) -> str:
        clock.now_s += 0.1
        return served.name

    for _ in range(n):
        await fallback_router.call(model, call)


async def queued(fallback_router: FallbackRouter, clock: Clock, model: ServedModel) -> None:
    """A service time of 0.1 s, then five pairs of calls out at once taking 0.15 s: the second
    of each waited 0.05 s for the one ahead of it."""
    await busy(fallback_router, clock, model, 5)
    for _ in range(5):
        release = asyncio.Event()

        async def call(served: ServedModel, release: asyncio.Event = release) -> str:
            await release.wait()
            return served.name

        pair = [asyncio.create_task(fallback_router.call(model, call)) for _ in range(2)]
        await asyncio.sleep(0)
        clock.now_s += 0.15
        release.set()
        await asyncio.gather(*pair)


def test_a_predicted_miss_is_refused_at_once_with_retry_after() -> None:
    clock = Clock()
    model = served("slow", slo={"latency_ms": 520})
    fallback_router, _ = router(clock)

    async def scenario() -> None:
        await queued(fallback_router, clock, model)
        hold = asyncio.Event()

        async def waiting(served: ServedModel) -> str:
            await hold.wait()
            return served.name

        # Admitted while 0.1 s + ahead * 0.05 s stays within 0.8 * 520 ms: seven calls.
        out = [asyncio.create_task(fallback_router.call(model, waiting)) for _ in range(7)]
        await asyncio.sleep(0)
        assert fallback_router.load("slow").in_flight == 7
        with pytest.raises(PredictedMiss) as refused:
            await fallback_router.call(model, waiting)
        assert refused.value.status_code == 503
        assert refused.value.reason == "predicted_miss"
        assert refused.value.headers == {"Retry-After": "1"}
        assert "about 450 ms, past its objective of 520 ms" in refused.value.message
        hold.set()
        await asyncio.gather(*out)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_predicted_miss_goes_to_the_fallback_when_there_is_one() -> None:
    clock = Clock()
    # A service time of 0.1 s: within the objective, past the 0.8 of it admission keeps.
    primary = served("big", fallback="small", slo={"latency_ms": 120})
    fallback_router, events = router(clock)

    async def scenario() -> str | None:
        await busy(fallback_router, clock, primary, 5)
        hold = asyncio.Event()

        async def waiting(served: ServedModel) -> str:
            await hold.wait()
            return served.name

        async def call(served: ServedModel) -> str:
            return served.name

        # Alone, a call is admitted; the next one finds it out.
        out = asyncio.create_task(fallback_router.call(primary, waiting))
        await asyncio.sleep(0)
        _, routed = await fallback_router.call(primary, call)
        hold.set()
        _, alone = await out
        assert alone.fallback_reason is None
        return routed.fallback_reason

    assert asyncio.run(scenario()) == "predicted_miss"
    assert events[-1] == ("big", "small", "predicted_miss")


def test_admission_off_queues_whatever_the_prediction() -> None:
    clock = Clock()
    model = served("slow", slo={"latency_ms": 100, "admission": False})
    fallback_router, _ = router(clock)

    async def scenario() -> str:
        await busy(fallback_router, clock, model, 5)

        async def call(served: ServedModel) -> str:
            return served.name

        result, _ = await fallback_router.call(model, call)
        return result

    assert asyncio.run(scenario()) == "slow"


def test_the_objective_is_the_fallback_trigger_at_its_percentile() -> None:
    clock = Clock()
    primary = served(
        "big", fallback="small", slo={"latency_ms": 300, "percentile": 50, "admission": False}
    )
    fallback_router, events = router(clock)

    async def call(model: ServedModel) -> str:
        clock.now_s += 0.4 if model.name == "big" else 0.01
        return model.name

    async def scenario() -> list[str]:
        return [(await fallback_router.call(primary, call))[0] for _ in range(6)]

    assert asyncio.run(scenario()) == ["big"] * 5 + ["small"]
    assert events == [("big", "small", "latency")]
