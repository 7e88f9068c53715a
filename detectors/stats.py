"""Score bounds for rates on small counts: 2 failures out of 3 is not an outage."""

from __future__ import annotations

from math import sqrt


def wilson_bounds(successes: int, trials: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when there is no data."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denom = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denom
    margin = z * sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denom
    return max(0.0, centre - margin), min(1.0, centre + margin)


def wilson_lower(successes: int, trials: int, z: float) -> float:
    return wilson_bounds(successes, trials, z)[0]


def ewma(previous: float, value: float, alpha: float) -> float:
    return previous + alpha * (value - previous)
