from __future__ import annotations

import pytest

from benchmarks.stats import RunRecord, goodput_rps


def test_goodput_counts_answers_within_the_objective_sent_in_the_window() -> None:
    record = RunRecord()
    record.add(0.5, 0.1, 200)  # before the window
    record.add(1.0, 0.1, 200)  # good
    record.add(1.5, 0.3, 200)  # good: exactly the objective
    record.add(2.0, 0.31, 200)  # late
    record.add(2.5, 0.01, 503)  # refused
    record.add(2.9, 0.2, 200)  # good
    record.add(3.0, 0.1, 200)  # after the window
    assert goodput_rps(record, 0.3, (1.0, 3.0)) == pytest.approx(3 / 2)
    assert goodput_rps(record, 0.3, (3.0, 3.0)) == 0.0
