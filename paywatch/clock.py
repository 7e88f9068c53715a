"""Injectable clocks. Detection logic never reads the wall clock itself: live runs pass a
SystemClock, replays and tests drive a ManualClock from event time, which is what makes
replay deterministic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; never moves backwards."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware UTC start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not run backwards")
        self._now += step
        return self._now

    def set(self, at: datetime) -> datetime:
        """Move to `at` if it is later; event-time replays call this with each event's time."""
        if at > self._now:
            self._now = at
        return self._now


def iso_utc(value: datetime | str | None) -> str:
    """How every paywatch command prints a time: ISO 8601 in UTC to the second, e.g.
    2026-01-15T10:05:03Z (20 characters, never cut by a table)."""
    if value is None or value == "":
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: paywatch times are UTC")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
