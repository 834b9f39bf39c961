from __future__ import annotations

import pytest

from serve_app.routing.admission import ADMIT_FRACTION, predict

LIMIT_S = ADMIT_FRACTION * 0.5  # of a 500 ms objective: 0.4 s


@pytest.mark.parametrize(
    ("ahead", "service_s", "seconds_per_place", "latency_s", "misses", "retry_after_s"),
    [
        (0, 0.1, 0.05, 0.1, False, 1.0),  # alone: the service time
        (6, 0.1, 0.05, 0.4, False, 1.0),  # 0.4 s: at the limit, admitted
        (7, 0.1, 0.05, 0.45, True, 1.0),  # past it: refused, retry in at least 1 s
        (100, 0.1, 0.05, 5.1, True, 4.7),  # a long queue: retry once it has drained
        (0, 0.5, 0.05, 0.5, True, 1.0),  # one call alone is past the limit
        (1000, 0.1, 0.0001, 0.2, False, 1.0),  # fast per place: a long queue is fine
        (5, 0.1, None, 0.1, False, 1.0),  # no queue seen yet: nothing charged per place
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
