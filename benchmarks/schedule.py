"""Arrival times for open-loop load: a Poisson process with a fixed seed."""

from __future__ import annotations

import random


def poisson_arrivals_s(
    rate_rps: float, duration_s: float, seed: int, max_count: int | None = None
) -> list[float]:
    """Arrival offsets in seconds from the run start, ascending, all < `duration_s`.

    Gaps are exponential with mean 1/rate, so arrivals do not wait for
    answers: the load stays what was asked for even when the service slows down.
    """
    if rate_rps <= 0:
        raise ValueError("rate_rps must be > 0")
    if duration_s <= 0:
        raise ValueError("duration_s must be > 0")
    rng = random.Random(seed)
    arrivals: list[float] = []
    t_s = rng.expovariate(rate_rps)
    while t_s < duration_s and (max_count is None or len(arrivals) < max_count):
        arrivals.append(t_s)
        t_s += rng.expovariate(rate_rps)
    return arrivals
