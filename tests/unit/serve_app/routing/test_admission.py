from __future__ import annotations

import asyncio

import pytest

from serve_app.config import LatencyObjective
from serve_app.routing.admission import (
    ADMIT_FRACTION,
    FREE_PLACES,
    ModelLoad,
    predict,
    refusal,
)

LIMIT_S = ADMIT_FRACTION * 0.5  # of a 500 ms objective: 0.4 s


def test_the_time_already_spent_in_the_ingress_counts() -> None:
    prediction = predict(6, 0.1, 0.05, 500, waited_s=0.05)  # 0.4 s ahead, 0.05 s spent
    assert prediction is not None
    assert prediction.latency_s == pytest.approx(0.45)
    assert prediction.misses


@pytest.mark.parametrize(
    ("ahead", "service_s", "seconds_per_place", "latency_s", "misses", "retry_after_s"),
    [
        (0, 0.1, 0.05, 0.1, False, 1.0),  # alone: the service time
        (6, 0.1, 0.05, 0.4, False, 1.0),  # 0.4 s: at the limit, admitted
        (7, 0.1, 0.05, 0.45, True, 1.0),  # past it: refused, retry in at least 1 s
        (100, 0.1, 0.05, 5.1, True, 4.7),  # a long queue: retry once it has drained
        (0, 0.5, 0.05, 0.5, True, 1.0),  # one call alone is past the limit
        (1000, 0.1, 0.0001, 0.2, False, 1.0),  # fast per place: a long queue is fine
        # No seconds per place measured yet: the first FREE_PLACES free, each beyond a service time
        (FREE_PLACES, 0.1, None, 0.1, False, 1.0),
        (FREE_PLACES + 3, 0.1, None, 0.4, False, 1.0),
        (FREE_PLACES + 4, 0.1, None, 0.5, True, 1.0),
    ],
)
def test_prediction_table(
    ahead: int,
    service_s: float,
    seconds_per_place: float | None,
    latency_s: float,
    misses: bool,
    retry_after_s: float,
) -> None:
    prediction = predict(ahead, service_s, seconds_per_place, 500)
    assert prediction is not None
    assert prediction.latency_s == pytest.approx(latency_s)
    assert prediction.limit_s == pytest.approx(LIMIT_S)
    assert prediction.misses is misses
    assert prediction.retry_after_s() == pytest.approx(retry_after_s)


@pytest.mark.parametrize(
    ("service_s", "seconds_per_place"),
    [(None, 0.1), (float("nan"), 0.1), (0.1, float("inf"))],
)
def test_no_measurement_predicts_nothing(
    service_s: float | None, seconds_per_place: float | None
) -> None:
    assert predict(10, service_s, seconds_per_place, 250) is None


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def finish(load: ModelLoad, clock: FakeClock, ahead: int, seconds: float) -> None:
    """One call through `load` that found `ahead` calls out and took `seconds`."""

    async def call() -> None:
        clock.now_s += seconds

    load.in_flight = ahead
    asyncio.run(load.timed(call()))
    load.in_flight = 0


def served_alone(seconds: float) -> tuple[FakeClock, ModelLoad]:
    """A model load after six lone calls of `seconds` each: its service time."""
    clock = FakeClock()
    load = ModelLoad(clock)
    for _ in range(6):
        finish(load, clock, ahead=0, seconds=seconds)
    return clock, load


def test_a_sustained_queue_does_not_shrink_seconds_per_place() -> None:
    # A model doing 20 calls/s: alone a call takes 0.1 s, with k ahead 0.1 + 0.05 k. Then a
    # minute of overload in which every call queues behind 20: only queued calls in the window.
    clock, load = served_alone(0.1)
    for _ in range(600):
        finish(load, clock, ahead=20, seconds=0.1 + 20 * 0.05)
    assert load.service_s(clock()) == pytest.approx(0.1)
    objective = LatencyObjective(latency_ms=2000)
    load.in_flight = 40  # twice the queue: predicted 0.1 + 40 * 0.05, past 0.8 * 2 s
    prediction = load.predict(objective)
    assert prediction is not None
    assert prediction.latency_s == pytest.approx(2.1)
    assert prediction.misses


def test_seconds_per_place_outlive_a_quiet_spell() -> None:
    # Measured under load (0.05 s a place), then 30 s without a call: the window is empty, and
    # a burst is still charged 0.05 s a place rather than nothing.
    clock, load = served_alone(0.1)
    for _ in range(6):
        finish(load, clock, ahead=4, seconds=0.1 + 4 * 0.05)
    clock.now_s += 30.0
    load.in_flight = 40
    prediction = load.predict(LatencyObjective(latency_ms=2000))
    assert prediction is not None
    assert prediction.latency_s == pytest.approx(0.1 + 40 * 0.05)
    assert prediction.misses


def test_a_first_burst_is_bounded_before_any_place_is_measured() -> None:
    # Only lone calls so far (0.1 s each): a burst gets FREE_PLACES places free, then pays a
    # service time for each place, so it is refused well before the queue reaches 100.
    _, load = served_alone(0.1)
    objective = LatencyObjective(latency_ms=2000)  # admitted up to 1.6 s
    load.in_flight = FREE_PLACES + 15
    admitted = load.predict(objective)
    load.in_flight = FREE_PLACES + 16
    refused = load.predict(objective)
    assert admitted is not None
    assert not admitted.misses
    assert refused is not None
    assert refused.misses


def test_the_first_call_measures_the_service_time() -> None:
    clock = FakeClock()
    load = ModelLoad(clock)
    assert load.service_s(clock()) is None
    finish(load, clock, ahead=0, seconds=0.2)
    assert load.service_s(clock()) == pytest.approx(0.2)


def test_a_request_that_finds_no_call_out_is_admitted_and_measures_the_model_afresh() -> None:
    # A service time measured late (5 s, past the 1.6 s limit) would refuse every request, and
    # with nothing admitted nothing would measure it again. Alone, a request is admitted.
    clock = FakeClock()
    load = ModelLoad(clock)
    objective = LatencyObjective(latency_ms=2000)
    finish(load, clock, ahead=0, seconds=5.0)
    load.in_flight = 1
    assert refusal("m", load, objective) is not None
    load.in_flight = 0
    assert refusal("m", load, objective) is None
    for _ in range(2):
        finish(load, clock, ahead=0, seconds=0.1)
    assert load.service_s(clock()) == pytest.approx(0.1)  # the median of 5.0, 0.1, 0.1
    load.in_flight = 1
    assert refusal("m", load, objective) is None
