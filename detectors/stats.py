"""Exact binomial tails for rates on small and large counts: 2 failures out of 3 is not an
outage, 60 out of 60 is, and 150 out of 1,000 against a 10 % baseline is too."""

from __future__ import annotations

from math import exp, lgamma, log, log1p


def binomial_tail(k: int, n: int, p: float, stop: float = 1.0) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p): the chance of seeing `k` or more of `n` if the true rate
    were `p`. Summed exactly from the k-th term down the tail (for k above n·p the terms shrink
    geometrically, so a handful of terms suffice even for large n). Stops as soon as the sum
    reaches `stop`, returning that partial sum: callers asking "is it below alpha?" pass alpha."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    log_term = lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) + k * log(p) + (n - k) * log1p(-p)
    term = exp(log_term)
    total = term
    odds = p / (1.0 - p)
    i = k
    while i < n and total < stop and term > total * 1e-12:
        term *= (n - i) / (i + 1) * odds
        total += term
        i += 1
    return min(total, 1.0)


def binomial_head(k: int, n: int, p: float, stop: float = 1.0) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p): the chance of seeing at most `k` of `n` at rate `p`."""
    return binomial_tail(n - k, n, 1.0 - p, stop)


def binomial_lower_bound(k: int, n: int, alpha: float) -> float:
    """The lowest rate at which `k` or more of `n` is not significant at `alpha` (the exact one-sided
    Clopper-Pearson bound): a rate is significantly above `p` exactly when this bound exceeds `p`."""
    if k <= 0 or n <= 0:
        return 0.0
    lo, hi = 0.0, k / n
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_tail(k, n, mid, alpha) < alpha else (lo, mid)
    return lo


def ewma(previous: float, value: float, alpha: float) -> float:
    return previous + alpha * (value - previous)
