"""How hard paywatch may lean on one channel's query API: a token bucket for the rate, a cap
on queries in flight, pauses demanded by the channel (429 / Retry-After), and a circuit
breaker that stops querying a failing API and lets one probe through to bring it back.

Pure state machines over a monotonic time in seconds; the executor supplies the time and
does the waiting, tests drive them with any numbers they like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from paywatch.compensation.settings import BudgetSettings

CircuitState = Literal["closed", "open", "half_open"]


class TokenBucket:
    """`rate` tokens per second, at most `capacity` saved up. With capacity 1, starts are spaced
    at least 1/rate apart, so no one-second window ever holds more than `rate` of them."""

    def __init__(self, rate: float, capacity: float = 1.0, now: float = 0.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0 = now)."""
        self._refill(now)
        # A hair of tolerance: float refills must not leave a waiter spinning on a 1e-17 deficit.
        return 0.0 if self._tokens >= 1 - 1e-9 else (1 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1


@dataclass
class CircuitBreaker:
    """closed → (N consecutive failures) → open → (wait) → half_open: one probe →
    closed on success, open again with a doubled wait on failure."""

    failures_to_open: int
    open_s: float
    max_open_s: float
    state: CircuitState = "closed"
    failures: int = 0
    reopen_at: float = 0.0
    current_open_s: float = 0.0
    probing: bool = False

    def wait(self, now: float) -> float | None:
        """Seconds until a query may start; None = wait for the probe in flight to finish."""
        if self.state == "open":
            if now < self.reopen_at:
                return self.reopen_at - now
            self.state = "half_open"
        if self.state == "half_open" and self.probing:
            return None
        return 0.0

    def started(self) -> None:
        if self.state == "half_open":
            self.probing = True

    def finished(self, now: float, ok: bool) -> CircuitState | None:
        """Record a query's result; returns the new state when it changed."""
        was = self.state
        if ok:
            self.failures = 0
            if self.state == "half_open":
                self.state, self.probing, self.current_open_s = "closed", False, 0.0
        else:
            self.failures += 1
            if self.state == "half_open":
                self.current_open_s = min(self.max_open_s, max(self.open_s, self.current_open_s * 2))
                self.state, self.probing, self.reopen_at = "open", False, now + self.current_open_s
            elif self.state == "closed" and self.failures >= self.failures_to_open:
                self.current_open_s = self.open_s
                self.state, self.reopen_at = "open", now + self.open_s
        return self.state if self.state != was else None


class ChannelBudget:
    """Everything that decides whether one more query may start now on one channel."""

    def __init__(self, settings: BudgetSettings, now: float = 0.0) -> None:
        self.settings = settings
        self.bucket = TokenBucket(settings.qps * (1 - settings.headroom), 1.0, now)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s, settings.breaker_max_open_s)
        self.in_flight = 0
        self.paused_until = 0.0

    def wait(self, now: float) -> float | None:
        """Seconds to wait before the next query may start (0 = go now); None = wait until a
        query in flight finishes (concurrency cap, or the circuit's probe)."""
        if self.in_flight >= self.settings.concurrency:
            return None
        breaker = self.breaker.wait(now)
        if breaker is None or breaker > 0:
            return breaker
        if now < self.paused_until:
            return self.paused_until - now
        return self.bucket.wait(now)

    def start(self, now: float) -> None:
        self.bucket.take(now)
        self.breaker.started()
        self.in_flight += 1

    def finish(
        self, now: float, *, api_failed: bool, throttled: bool = False, retry_after_s: float | None = None
    ) -> CircuitState | None:
        """Record how a query ended. A 429 pauses the channel (Retry-After, else the configured
        pause) without counting against the circuit: the API works, it asks us to slow down."""
        self.in_flight -= 1
        if throttled or retry_after_s is not None:
            pause = retry_after_s if retry_after_s is not None else self.settings.throttle_pause_s
            self.paused_until = max(self.paused_until, now + pause)
        if throttled:
            self.breaker.probing = False
            return None
        return self.breaker.finished(now, ok=not api_failed)
