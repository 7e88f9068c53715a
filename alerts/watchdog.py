"""Self-monitoring: the monitor being dead or stuck must be visible from outside.

`PaywatchWatchdog` is always firing (the dead man's switch): Alertmanager routes it to
something outside paywatch that pages when it *stops* arriving. `PaywatchStalled` fires
when paywatch is alive but falling behind: the alert consumer's lag on the findings
topic, or a paywatch stage (the detector's tick) whose heartbeat is late or failing.
Both are pure: the CLI feeds observations and the clock's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from paywatch.alerts.engine import Signal
from paywatch.alerts.model import Alert, AlertChange

WATCHDOG = "PaywatchWatchdog"


def watchdog_change(since: datetime, now: datetime) -> AlertChange:
    """The always-firing alert, re-sent on every resend tick while this process lives."""
    alert = Alert(
        labels={"alertname": WATCHDOG, "severity": "none"},
        annotations={
            "summary": "paywatch alerting is alive (this alert always fires)",
            "description": "Dead man's switch: route it to a receiver that pages when it stops arriving.",
        },
        starts_at=since,
        status="firing",
    )
    return AlertChange(alert, now, page=True, reason="resent")


@dataclass
class _Watch:
    stalled: bool = False
    last_seen: datetime | None = None
    failing: bool = False


class StallMonitor:
    """Turns lag and tick observations into `paywatch_stalled` signals for the alert engine."""

    def __init__(self, max_consumer_lag: int, max_tick_age: timedelta) -> None:
        self._max_lag = max_consumer_lag
        self._max_age = max_tick_age
        self._lag: dict[str, int] = {}
        self._watches: dict[str, _Watch] = {}

    def observe_lag(self, component: str, lag: int) -> None:
        """Messages the component still has to read (high watermark minus committed offset)."""
        self._lag[component] = lag
        self._watches.setdefault(component, _Watch())

    def observe_tick(self, component: str, at: datetime, status: str = "up") -> None:
        """The component's heartbeat at `at`: `degraded` is a failing check, `stopping` a planned
        stop (not watched until it beats again)."""
        watch = self._watches.setdefault(component, _Watch())
        if status == "stopping":
            watch.last_seen, watch.failing = None, False
        elif watch.last_seen is None or at >= watch.last_seen:
            watch.last_seen, watch.failing = at, status == "degraded"

    def is_stalled(self, component: str) -> bool:
        """As of the last `check`."""
        watch = self._watches.get(component)
        return watch is not None and watch.stalled

    def check(self, now: datetime) -> list[Signal]:
        """Signals for components whose stalled state changed since the last check."""
        signals = []
        for component, watch in self._watches.items():
            why = self._why(component, watch, now)
            if (why is not None) == watch.stalled:
                continue
            watch.stalled = why is not None
            signals.append(
                Signal(
                    kind="paywatch_stalled",
                    key=f"paywatch_stalled|{component}",
                    open=why is not None,
                    at=now,
                    summary=why or f"{component} caught up",
                    service=component,
                )
            )
        return signals

    def _why(self, component: str, watch: _Watch, now: datetime) -> str | None:
        lag = self._lag.get(component)
        if lag is not None and lag > self._max_lag:
            return f"{component} is {lag} messages behind (limit {self._max_lag})"
        if watch.last_seen is not None:
            age = now - watch.last_seen
            if age > self._max_age:
                limit = self._max_age.total_seconds()
                return f"{component} last ticked {age.total_seconds():.0f}s ago (limit {limit:.0f}s)"
            if watch.failing:
                return f"{component} reports a failing check"
        return None
