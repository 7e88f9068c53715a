"""paywatch's own clock, and how far a producer's `@timestamp` is trusted against it.

Detectors count time in integer epoch milliseconds: cheap to store and compare, exact to replay.

A producer's `@timestamp` is a claim made by its clock, and a few hosts whose NTP died must not
change how anyone else is judged. So the detectors keep their own clock (`Timebase.now`):

- live, the wall clock (ticks, and a ceiling for what producers may claim);
- replaying, or reading a Kafka backlog, a **watermark**: the time that a quorum of the
  producers (instances, keyed by instance id) heard from in the last `watermark_window_s`
  have reached — `watermark_quorum` of them (a share, at least two). The quorum-th newest
  claim: producers ahead (fewer than the quorum) cannot drag it forward, producers behind or
  dead cannot hold it back while a quorum is alive. It only moves forward. When only the
  newest producer is still moving, for `watermark_stall_s` of its own time, the clock
  follows it at the offset it had from the others, so a lone survivor still lets the deaths
  of the rest be seen. With two producers or fewer nobody can be outvoted: the clock is the
  newest claim (ahead for a while is harmless, events are judged at it; held back and then
  jumping forward would make everyone look silent), and it is not `established`, so replay
  does not tick on it until more producers are heard (or one has sent for `watermark_stall_s`).

An event whose claim is within `arrival_tolerance_s` of that clock is judged at its own
time (it is precise, and independent of which worker read it); a claim further off is
judged at paywatch's clock when it arrived. Claims more than `future_limit_s` ahead are not
even counted in the watermark.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

COUNT_MS = 10_000  # how often the producers heard from recently are counted (the quorum's size)
TICK_MS = 1000  # detectors are ticked at every whole second of their clock
# The instants a datetime can hold: a claim of 9999-12-31 plus a deadline is still a date.
MIN_MS = -62_135_596_800_000  # 0001-01-01
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999


def to_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(min(max(ms, MIN_MS), MAX_MS) / 1000, UTC)


class Ticker:
    """The whole seconds a clock has passed since the last call: replay, the Kafka workers and the
    embedded backend all tick the detectors on these, so one input gives one set of findings."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next: int | None = None  # the next whole second to tick; None until the clock is known

    def start(self, at: int) -> None:
        """Tick from the first whole second at or after `at` (unless already ticking)."""
        if self.next is None:
            self.next = -(-at // TICK_MS) * TICK_MS

    def until(self, now: int) -> Iterator[int]:
        self.start(now)
        assert self.next is not None
        while self.next <= now:
            yield self.next
            self.next += TICK_MS


class Timebase:
    """The clock at which events arrive and deadlines fire; see the module docstring."""

    __slots__ = (
        "_count_at",
        "_first",
        "_future",
        "_k",
        "_lead",
        "_past",
        "_reached",
        "_share",
        "_stall",
        "_tolerance",
        "_top",
        "_window",
        "established",
        "latest",
        "now",
    )

    def __init__(
        self,
        tolerance_ms: int = 10_000,
        future_ms: int = 600_000,
        past_ms: int = 86_400_000,
        share: float = 0.3,
        stall_ms: int = 60_000,
        window_ms: int = 300_000,
    ) -> None:
        self.now = 0  # paywatch's clock (ms); 0 until the first event or tick
        self.established = False  # the watermark can be trusted: deadlines may be judged by it
        self.latest: dict[str, int] = {}  # producer → its newest counted claim (recent producers)
        self._top: list[list] = []  # the `_k` newest producers: [claim, producer], newest first
        self._k = 2  # the quorum: how many producers must have reached a time
        self._count_at = 0  # when to count the recent producers again (every COUNT_MS of clock)
        self._reached = 0  # the time the quorum had reached when it last moved
        self._lead = 0  # how far the newest producer was ahead of the quorum then
        self._first = 0  # the first claim counted
        self._tolerance = tolerance_ms
        self._future = future_ms
        self._past = past_ms
        self._share = share
        self._stall = stall_ms
        self._window = window_ms

    @classmethod
    def of(cls, settings: object) -> Timebase:
        """A Timebase configured from `DetectorSettings` (typed loosely: settings import this module)."""
        s = settings
        return cls(
            int(s.arrival_tolerance_s * 1000),  # type: ignore[attr-defined]
            int(s.future_limit_s * 1000),  # type: ignore[attr-defined]
            int(s.past_limit_s * 1000),  # type: ignore[attr-defined]
            s.watermark_quorum,  # type: ignore[attr-defined]
            int(s.watermark_stall_s * 1000),  # type: ignore[attr-defined]
            int(s.watermark_window_s * 1000),  # type: ignore[attr-defined]
        )

    def tick(self, now: int) -> None:
        """The wall clock (live) or the replay's tick: the clock never runs backwards."""
        if now > self.now:
            self.now = now

    def _count(self) -> None:
        """Forget producers not heard from within the window; size the quorum to those left."""
        horizon = self.now - self._window
        latest = self.latest
        if self.now and min(latest.values()) < horizon:
            latest = self.latest = {p: c for p, c in latest.items() if c >= horizon}
        self._k = max(2, math.ceil(self._share * len(latest)))
        self._top = sorted(([c, p] for p, c in latest.items()), reverse=True)[: self._k]
        self._count_at = self.now + COUNT_MS

    def observe(self, producer: str, claim: int, ceiling: int = 0) -> int:
        """Count one event's claim in the watermark; returns the clock after it. A live reader
        passes its wall clock as `ceiling`: no claim moves the clock past it."""
        if self.now and claim > self.now + self._future:
            return self.now  # years ahead: says nothing about the time
        prev = self.latest.get(producer)
        if prev is not None and claim <= prev:
            return self.now
        self.latest[producer] = claim
        top = self._top
        if prev is None or self.now >= self._count_at:
            self._count()
            top = self._top
        else:
            for row in top:
                if row[1] == producer:
                    row[0] = claim
                    break
            else:
                if claim <= top[-1][0]:
                    return self.now
                top[-1] = [claim, producer]
            top.sort(reverse=True)
        n = len(self.latest)
        if not self.established:
            self._first = self._first or claim
            self.established = n > 2 or claim - self._first >= self._stall
        if n <= 2:
            # too few producers to outvote one: the newest claim (ahead is harmless here, a clock
            # held back and then jumping forward would make everyone look silent)
            reached = top[0][0]
        else:
            reached = top[-1][0]
            if reached != self._reached:
                self._reached = reached
                self._lead = top[0][0] - reached
            elif top[0][0] - self._lead > reached + self._stall:
                # only the newest producer has moved, for longer than `stall`: follow it at its offset
                reached = top[0][0] - self._lead
        if ceiling and reached > ceiling:
            reached = ceiling
        if reached > self.now:
            self.now = reached
        return self.now

    def judge(self, claim: int) -> int:
        """The time an event is judged at: its claim if close to paywatch's clock, else the clock."""
        now = self.now
        if not now or -self._tolerance <= claim - now <= self._tolerance:
            return claim
        return now

    def far(self, claim: int) -> bool:
        """A claim no working clock makes (years ahead, days behind): flagged at once."""
        return bool(self.now) and (claim - self.now > self._future or self.now - claim > self._past)
