"""The detection core: events and clock ticks in, findings out. No I/O, no wall clock.

`DetectionEngine` is the whole pipeline in one process (replay, embedded mode, one
worker). Scaled out, the same pieces are split: each worker runs an `OrderTracker`, a
`WindowCounter` and a `HeartbeatTable` per partition it owns and publishes closed
windows as partials; the aggregation stage sums them and runs the `ChannelJudge`.

Every event is counted in paywatch's own clock (`Timebase`: the producers' watermark, and the
wall clock through `tick`) and judged at its `@timestamp` only when that agrees with it.
"""

from __future__ import annotations

from datetime import datetime

from paywatch.contract import HEARTBEAT, PAYMENT, Event
from paywatch.detectors.channel_health import ChannelJudge
from paywatch.detectors.heartbeats import HeartbeatTable
from paywatch.detectors.orders import OrderTracker
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.timebase import Timebase, to_ms
from paywatch.detectors.windows import WindowCounter
from paywatch.finding import Finding


def window_counter(settings: DetectorSettings) -> WindowCounter:
    return WindowCounter(
        int(settings.window_s * 1000), int(settings.allowed_lateness_s * 1000), settings.health_by_method
    )


class DetectionEngine:
    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self.windows = window_counter(self.settings)
        self.orders = OrderTracker(self.settings, self.windows)
        self.judge = ChannelJudge(self.settings)
        self.clock = Timebase.of(self.settings)
        self.heartbeats = HeartbeatTable(self.settings, self.clock)

    def feed(self, event: Event, arrived: datetime | None = None) -> list[Finding]:
        """Judge one event. Live callers pass `arrived` (the wall clock at ingest): it is paywatch's
        clock then. Without it (replay, simulations), the producers' watermark is."""
        claim = to_ms(event.timestamp)
        if arrived is None:
            self.clock.observe(event.service.instance.id, claim)
        else:
            self.clock.tick(to_ms(arrived))
        return self.feed_ms(event, claim)

    def feed_ms(self, event: Event, claim: int) -> list[Finding]:
        """`feed` for callers that already converted `@timestamp` to epoch ms and counted it in
        `clock.observe` (replay, which ticks in between)."""
        dataset = event.event.dataset
        if dataset == PAYMENT:
            return self.orders.feed(event, self.clock.judge(claim))
        if dataset == HEARTBEAT:
            return self.heartbeats.feed(event, claim)
        return []

    def tick(self, now: datetime) -> list[Finding]:
        return self.tick_ms(to_ms(now))

    def tick_ms(self, now: int) -> list[Finding]:
        self.clock.tick(now)
        # Per-order deadlines first: what they open is counted in windows closed just after.
        found = self.orders.tick(now)
        for index, window in self.windows.close_until(now):
            found += self.judge.on_window(index, window)
        found += self.heartbeats.tick(now)
        return found
