"""Per-window counts per channel: the only state that spans orders.

Per-order detectors add to the tally of the window an event falls in; once event time
passes a window's end plus the allowed lateness the window is closed and handed to the
judge. With several workers each one closes its own windows and publishes them as
*partials*; adding partials of all sources gives exactly the single-worker tally.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

# Tally fields, in wire order.
FIELDS = (
    "attempts",  # attempts first seen
    "finished",  # attempts that reached a final outcome (success, channel or customer failure)
    "failures",  # final failures the channel or the system caused
    "customer_failures",  # final failures the customer caused (error_category user/limit)
    "timeouts",  # attempts still without outcome after query_after
    "latency_sum",  # sum of payment.latency_ms over outcomes that carry it
    "latency_n",
    "pending",  # paid-but-pending orders opened
    "duplicates",  # orders that became duplicate-charged
)
NAMED = ("codes", "stuck_by", "duplicated_by")  # count-per-name fields, in wire order after FIELDS


class Tally:
    """Counts of one channel (or channel/method) in one window."""

    __slots__ = (*FIELDS, *NAMED)

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, 0)
        self.codes: dict[str, int] = {}  # customer-side error code -> failures
        # Who the stuck / duplicate-charged orders belong to ("merchant=m-1" on a channel's tally,
        # "channel=alipay" on a merchant's), so an incident's page names both.
        self.stuck_by: dict[str, int] = {}
        self.duplicated_by: dict[str, int] = {}

    def add(self, other: Tally) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in NAMED:
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n

    def subtract(self, other: Tally) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) - getattr(other, name))
        codes = self.codes
        for code, n in other.codes.items():
            left = codes[code] - n
            if left:
                codes[code] = left
            else:
                del codes[code]

    def to_wire(self) -> list:
        return [*(getattr(self, name) for name in FIELDS), *(getattr(self, name) for name in NAMED)]

    @classmethod
    def from_wire(cls, row: list) -> Tally:
        tally = cls()
        for name, value in zip(FIELDS, row, strict=False):
            setattr(tally, name, int(value))
        for name, named in zip(NAMED, row[len(FIELDS) :], strict=False):
            setattr(tally, name, {str(k): int(v) for k, v in named.items()})
        return tally


Window = dict[str, Tally]  # key (channel, "channel/method", "merchant:<id>" or OVERALL) -> tally
# Empty windows closed one by one before the next one with counts; a longer run of them (a claim
# from year 1, then today's events) is closed as one, so a clock's jump costs no time. Far beyond
# what the channel judge looks back over (it judges at most its own gap limit of skipped windows).
_EMPTY_RUN = 100_000
OVERALL = "*"  # every channel summed (sent by Kafka workers to the one aggregator that judges it)
MERCHANT = "merchant:"  # prefix of a merchant's key: its stuck and duplicate-charged orders, no health


def is_channel(key: str) -> bool:
    """A whole channel's key (not a channel/method, merchant or overall one)."""
    return "/" not in key and key != OVERALL and not key.startswith(MERCHANT)


def overall(window: Window) -> Tally:
    """Stuck and duplicate-charged orders of every channel, named by channel and by merchant."""
    total = Tally()
    for key, tally in window.items():
        if not is_channel(key):
            continue
        for field, by in (("pending", "stuck_by"), ("duplicates", "duplicated_by")):
            n = getattr(tally, field)
            if not n:
                continue
            setattr(total, field, getattr(total, field) + n)
            named = getattr(total, by)
            named[f"channel={key}"] = named.get(f"channel={key}", 0) + n
            for name, k in getattr(tally, by).items():
                named[name] = named.get(name, 0) + k
    return total


class Span:
    """Running sums over the latest `windows` closed windows, for evidence longer than one window.

    Windows are grouped into buckets of `bucket` windows, so a 15-minute span of 2-second windows
    holds ten tallies, not 450, and each new window costs one addition (plus one subtraction when
    a bucket leaves). The sums cover between `windows - bucket + 1` and `windows` windows.
    `marks` counts the windows the caller flagged (e.g. windows that failed on their own)."""

    __slots__ = ("bucket", "current", "current_marks", "filled", "marks", "ring", "sums", "windows")

    def __init__(self, windows: int, buckets: int = 10) -> None:
        self.windows = max(1, windows)
        self.bucket = -(-self.windows // buckets)  # windows per bucket, rounded up
        self.ring: deque[tuple[Tally, int]] = deque(maxlen=-(-self.windows // self.bucket) - 1)
        self.clear()

    def clear(self) -> None:
        """Forget everything (what an incident counted must not re-open it)."""
        self.ring.clear()
        self.current = Tally()
        self.current_marks = 0
        self.filled = 0
        self.marks = 0
        self.sums = Tally()

    def push(self, tally: Tally, marked: bool = False) -> None:
        if self.filled == self.bucket:  # the current bucket is full: it joins the ring
            ring = self.ring
            if len(ring) == ring.maxlen:
                old, old_marks = ring[0] if ring else (self.current, self.current_marks)
                self.sums.subtract(old)
                self.marks -= old_marks
            if ring.maxlen:
                ring.append((self.current, self.current_marks))
            self.current = Tally()
            self.current_marks = 0
            self.filled = 0
        self.filled += 1
        if marked:
            self.current_marks += 1
            self.marks += 1
        if tally.finished or tally.attempts or tally.timeouts:
            self.current.add(tally)
            self.sums.add(tally)


class WindowCounter:
    """Tumbling windows of `window_ms`, closed `lateness_ms` after they end."""

    def __init__(self, window_ms: int, lateness_ms: int, by_method: bool = False) -> None:
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.by_method = by_method
        self.open_from: int | None = None  # index of the oldest window not yet closed
        self._windows: dict[int, Window] = {}

    def _window(self, at_ms: int) -> Window:
        """The window an event at `at_ms` counts in; late events go to the oldest open window."""
        index = at_ms // self.window_ms
        if self.open_from is None:
            self.open_from = index
        elif index < self.open_from:
            index = self.open_from
        window = self._windows.get(index)
        if window is None:
            window = self._windows[index] = {}
        return window

    def tallies(self, at_ms: int, channel: str, method: str | None) -> tuple[Tally, ...]:
        """The tallies an event at `at_ms` adds to: its channel's, and its channel/method's."""
        window = self._window(at_ms)
        tally = window.get(channel)
        if tally is None:
            tally = window[channel] = Tally()
        if not (self.by_method and method):
            return (tally,)
        key = f"{channel}/{method}"
        sub = window.get(key)
        if sub is None:
            sub = window[key] = Tally()
        return tally, sub

    def count_order(self, at_ms: int, field: str, channel: str, method: str | None, merchant: str | None) -> None:
        """One order newly stuck (`pending`) or duplicate-charged (`duplicates`): counted on its channel
        and on its merchant, each naming the other."""
        by = "stuck_by" if field == "pending" else "duplicated_by"
        tallies = self.tallies(at_ms, channel, method)
        for t in tallies:
            setattr(t, field, getattr(t, field) + 1)
        if merchant is None:
            return
        named = getattr(tallies[0], by)
        named[f"merchant={merchant}"] = named.get(f"merchant={merchant}", 0) + 1
        window = self._window(at_ms)
        key = MERCHANT + merchant
        t = window.get(key)
        if t is None:
            t = window[key] = Tally()
        setattr(t, field, getattr(t, field) + 1)
        named = getattr(t, by)
        named[f"channel={channel}"] = named.get(f"channel={channel}", 0) + 1

    def close_until(self, now_ms: int) -> Iterator[tuple[int, Window]]:
        """Close every window whose end + lateness is ≤ now, in order, empty ones included."""
        last = (now_ms - self.lateness_ms) // self.window_ms - 1  # newest closable index
        if self.open_from is None:
            self.open_from = last + 1
            return
        while self.open_from <= last:
            if last - self.open_from > _EMPTY_RUN and self._windows:
                upto = min(min(self._windows), last + 1)
                if upto - self.open_from > _EMPTY_RUN:  # a stretch no clock meant: one empty window for it
                    self.open_from = upto
                    yield upto - 1, {}
                    continue
            index = self.open_from
            self.open_from += 1
            yield index, self._windows.pop(index, {})
            if not self._windows and self.open_from <= last:
                self.open_from = last + 1  # long silence: nothing left to close but empty windows
                yield last, {}
