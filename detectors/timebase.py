"""paywatch's own clock, and how far a producer's `@timestamp` is trusted against it.

Detectors count time in integer epoch milliseconds: cheap to store and compare, exact to replay.

A producer's `@timestamp` is a claim made by its clock, and one host whose NTP died must not
change how anyone else is judged. So the detectors keep their own clock (`Timebase.now`):

- live, the wall clock (ticks);
- replaying, or catching up on a Kafka backlog, a **watermark**: the time that at least
  `watermark_quorum` producers (keyed by instance id) have reached. One producer ahead
  cannot drag it forward (the others have not reached its time), one behind or dead cannot
  hold it back (the others have passed it). It only moves forward. When only one producer
  is left sending for `watermark_stall_s` of its own time, the clock follows it at the
  offset it had from the others, so a lone survivor still lets the deaths of the rest be seen.
  Until more than `watermark_quorum` producers are known nobody can be outvoted: the clock
  is the newest claim (ahead for a while is harmless, events are judged at it; held back and
  then jumping forward would make everyone look silent), and it is not `established`, so
  replay does not tick on it until then (or until one lone producer has sent for
  `watermark_stall_s`).

An event whose claim is within `arrival_tolerance_s` of that clock is judged at its own
time (it is precise, and independent of which worker read it); a claim further off is
judged at paywatch's clock when it arrived. Claims more than `future_limit_s` ahead are not
even counted in the watermark.
"""

from __future__ import annotations

from datetime import UTC, datetime


def to_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class Timebase:
    """The clock at which events arrive and deadlines fire; see the module docstring."""

    __slots__ = (
        "_first",
        "_future",
        "_lead",
        "_past",
        "_quorum",
        "_reached",
        "_stall",
        "_tolerance",
        "_top",
        "established",
        "latest",
        "now",
    )

    def __init__(
        self,
        tolerance_ms: int = 10_000,
        future_ms: int = 600_000,
        past_ms: int = 86_400_000,
        quorum: int = 2,
        stall_ms: int = 60_000,
    ) -> None:
        self.now = 0  # paywatch's clock (ms); 0 until the first event or tick
        self.established = False  # the watermark can be trusted: deadlines may be judged by it
        self._first = 0  # the first claim counted
        self.latest: dict[str, int] = {}  # producer → its newest counted claim
        self._top: list[list] = []  # the `quorum` newest producers: [claim, producer], newest first
        self._reached = 0  # the time the quorum had reached when it last moved
        self._lead = 0  # how far the newest producer was ahead of the quorum then
        self._tolerance = tolerance_ms
        self._future = future_ms
        self._past = past_ms
        self._quorum = quorum
        self._stall = stall_ms

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
        )

    def tick(self, now: int) -> None:
        """The wall clock (live) or the replay's tick: the clock never runs backwards."""
        if now > self.now:
            self.now = now

    def observe(self, producer: str, claim: int, ceiling: int = 0) -> int:
        """Count one event's claim in the watermark; returns the clock after it. A live reader
        passes its wall clock as `ceiling`: no claim moves the clock past it."""
        if self.now and claim > self.now + self._future:
            return self.now  # years ahead: says nothing about the time
        prev = self.latest.get(producer)
        if prev is not None and claim <= prev:
            return self.now
        self.latest[producer] = claim
        if not self.established:
            self._first = self._first or claim
            self.established = len(self.latest) > self._quorum or claim - self._first >= self._stall
        top = self._top
        for row in top:
            if row[1] == producer:
                row[0] = claim
                break
        else:
            if len(top) < self._quorum:
                top.append([claim, producer])
            elif claim > top[-1][0]:
                top[-1] = [claim, producer]
            else:
                return self.now
        top.sort(reverse=True)
        if len(self.latest) <= self._quorum:
            # too few producers to outvote one: start at the newest claim (ahead is harmless here,
            # a clock held back and then jumping forward would make everyone look silent)
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
