"""The detection core: events and clock ticks in, findings out. No I/O, no wall clock.

`DetectionEngine` is the whole pipeline in one process (replay, embedded mode, one
worker). Scaled out, the same pieces are split: each worker runs an `OrderTracker`, a
`WindowCounter` and a `HeartbeatTable` per partition it owns and publishes closed
windows as partials; the aggregation stage sums them and runs the `ChannelJudge`.
"""

from __future__ import annotations

from datetime import datetime

from paywatch.contract import HEARTBEAT, PAYMENT, Event
from paywatch.detectors.channel_health import ChannelJudge
from paywatch.detectors.heartbeats import HeartbeatTable
from paywatch.detectors.orders import OrderTracker
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.timebase import to_ms
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
        self.heartbeats = HeartbeatTable(self.settings)

    def feed(self, event: Event) -> list[Finding]:
        return self.feed_ms(event, to_ms(event.timestamp))

    def feed_ms(self, event: Event, at: int) -> list[Finding]:
        """`feed` for callers that already converted `@timestamp` to epoch ms (replay)."""
        dataset = event.event.dataset
        if dataset == PAYMENT:
            return self.orders.feed(event, at)
        if dataset == HEARTBEAT:
            return self.heartbeats.feed(event, at)
        return []

    def tick(self, now: datetime) -> list[Finding]:
        return self.tick_ms(to_ms(now))

    def tick_ms(self, now: int) -> list[Finding]:
        # Per-order deadlines first: what they open is counted in windows closed just after.
        found = self.orders.tick(now)
        for index, window in self.windows.close_until(now):
            found += self.judge.on_window(index, window)
        found += self.heartbeats.tick(now)
        return found
