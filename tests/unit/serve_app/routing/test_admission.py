from __future__ import annotations

import pytest

from serve_app.routing.admission import ADMIT_FRACTION, predict


@pytest.mark.parametrize(
    ("ahead", "seconds_per_place", "objective_ms", "latency_s", "misses", "retry_after_s"),
    [
        (0, 0.1, 500, 0.1, False, 1.0),  # alone: one place
        (2, 0.1, 500, 0.3, False, 1.0),  # 0.3 s within 0.7 * 0.5 s
        (3, 0.1, 500, 0.4, True, 1.0),  # 0.4 s past 0.35 s: refused, retry in at least 1 s
        (49, 0.1, 500, 5.0, True, 4.65),  # a long queue: retry once it has drained
        (0, 1.0, 500, 1.0, True, 1.0),  # one pass alone is past the objective
        (1000, 0.0001, 500, 0.1001, False, 1.0),  # fast per place: a long queue is fine
    ],
)
def test_prediction_table(
    ahead: int,
    seconds_per_place: float,
    objective_ms: float,
    latency_s: float,
    misses: bool,
    retry_after_s: float,
) -> None:
    prediction = predict(ahead, seconds_per_place, objective_ms)
    assert prediction is not None
    assert prediction.latency_s == pytest.approx(latency_s)
    assert prediction.limit_s == pytest.approx(ADMIT_FRACTION * objective_ms / 1000)
    assert prediction.misses is misses
    assert prediction.retry_after_s() == pytest.approx(retry_after_s)


@pytest.mark.parametrize("seconds_per_place", [None, float("nan"), float("inf")])
def test_no_measurement_predicts_nothing(seconds_per_place: float | None) -> None:
    assert predict(10, seconds_per_place, 250) is None
