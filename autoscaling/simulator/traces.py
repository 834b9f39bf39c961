"""Request-arrival traces for the simulator: a rate over time, then Poisson arrivals.

Every trace is a non-homogeneous Poisson process with rate ``rate_rps(t)``,
drawn by thinning (homogeneous arrivals at the peak rate, each kept with
probability ``rate(t) / peak``), so a seed fixes the arrivals exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
RateFn = Callable[[FloatArray], FloatArray]


@dataclass(frozen=True)
class Trace:
    """A named arrival rate (requests per second) over ``[0, duration_s)``."""

    name: str
    description: str
    duration_s: float
    peak_rps: float
    rate_rps: RateFn

    def arrivals(self, seed: int) -> FloatArray:
        """Sorted arrival times in seconds."""
        rng = np.random.default_rng(seed)
        expected = self.peak_rps * self.duration_s
        # Draw a few standard deviations more than expected so one pass suffices.
        count = int(expected + 6.0 * np.sqrt(expected) + 10)
        times = np.cumsum(rng.exponential(1.0 / self.peak_rps, size=count))
        times = times[times < self.duration_s]
        keep = rng.random(times.size) * self.peak_rps < self.rate_rps(times)
        return times[keep]

    def expected_requests(self, step_s: float = 0.1) -> float:
        grid = np.arange(0.0, self.duration_s, step_s)
        return float(self.rate_rps(grid).sum() * step_s)


def steady(base_rps: float, duration_s: float) -> Trace:
    return Trace(
        "steady",
        f"constant {base_rps:g} rps",
        duration_s,
        base_rps,
        lambda t: np.full_like(t, base_rps),
    )


def ramp(base_rps: float, duration_s: float, factor: float = 4.0) -> Trace:
    """Up from ``base`` to ``factor * base`` over the first 40%, hold, down over the last 40%."""
    peak = factor * base_rps

    def rate(t: FloatArray) -> FloatArray:
        edge = 0.4 * duration_s
        up = base_rps + (peak - base_rps) * t / edge
        down = base_rps + (peak - base_rps) * (duration_s - t) / edge
        return np.minimum(np.minimum(up, down), peak)

    return Trace("ramp", f"{base_rps:g} -> {peak:g} -> {base_rps:g} rps", duration_s, peak, rate)


def spike(base_rps: float, duration_s: float, factor: float = 5.0, length_s: float = 60.0) -> Trace:
    """``base`` with one sudden ``factor``-times step in the middle third."""
    start = duration_s / 3.0

    def rate(t: FloatArray) -> FloatArray:
        inside = (t >= start) & (t < start + length_s)
        return np.where(inside, factor * base_rps, base_rps)

    description = f"{base_rps:g} rps, {factor:g}x for {length_s:g}s at t={start:g}s"
    return Trace("spike", description, duration_s, factor * base_rps, rate)


def diurnal(base_rps: float, duration_s: float, factor: float = 4.0) -> Trace:
    """One compressed day: a cosine from ``base`` up to ``factor * base`` and back."""
    peak = factor * base_rps

    def rate(t: FloatArray) -> FloatArray:
        phase = 2.0 * np.pi * t / duration_s
        return base_rps + (peak - base_rps) * 0.5 * (1.0 - np.cos(phase))

    return Trace("diurnal", f"cosine {base_rps:g} -> {peak:g} rps", duration_s, peak, rate)


def on_off(peak_rps: float, duration_s: float, period_s: float = 60.0) -> Trace:
    """Bursts at ``peak_rps`` for half of every ``period_s``, silence otherwise."""

    def rate(t: FloatArray) -> FloatArray:
        return np.where((t % period_s) < period_s / 2.0, peak_rps, 0.0)

    description = f"{peak_rps:g} rps for {period_s / 2:g}s, then 0, period {period_s:g}s"
    return Trace("on_off", description, duration_s, peak_rps, rate)


def standard_traces(base_rps: float = 150.0, duration_s: float = 300.0) -> list[Trace]:
    """The five traces the comparison runs."""
    return [
        steady(2.0 * base_rps, duration_s),
        ramp(base_rps, duration_s),
        spike(base_rps, duration_s),
        diurnal(base_rps, duration_s),
        on_off(3.0 * base_rps, duration_s),
    ]
