"""The heartbeat sender: proof, every interval, that a service is alive and how it feels.

The monitor keeps a table of services and the time of their last beat; silence past the
interval is what `heartbeat_missing` / `service_down` findings are made of, and a final
`stopping` beat tells a clean shutdown apart from a death.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from paywatch.contract import HEARTBEAT, Event, EventMeta, Heartbeat, HeartbeatStatus, Service
from paywatch.ids import stable_id

log = logging.getLogger("paywatch.sdk")

Checks = Callable[[], Mapping[str, bool | str]]


class HeartbeatSender:
    """Sends `heartbeat` sections through `send`; `beat()` sends one now, `start()` every interval.

    Services driven by simulated time call `beat()` themselves instead of `start()`.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None], interval_s: float, checks: Checks | None = None) -> None:
        self.interval_s = interval_s
        self._send = send
        self._checks = checks
        self._seq = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, status: HeartbeatStatus | None = None) -> None:
        """One heartbeat: `status` if given, else `degraded` when a check fails, else `up`."""
        if self._stopped.is_set():
            return
        self._beat(status)

    def _beat(self, status: HeartbeatStatus | None) -> None:
        checks = self._run_checks()
        if status is None:
            status = "degraded" if checks and "fail" in checks.values() else "up"
        with self._lock:
            self._seq += 1
            seq = self._seq
        section: dict[str, Any] = {"interval_s": self.interval_s, "seq": seq, "status": status}
        if checks:
            section["checks"] = checks
        self._send(section)

    def _run_checks(self) -> dict[str, str] | None:
        if self._checks is None:
            return None
        try:
            results = self._checks()
            return {str(name): "ok" if ok is True or ok == "ok" else "fail" for name, ok in results.items()}
        except Exception as exc:
            log.warning("paywatch sdk: heartbeat checks raised %s: %s", type(exc).__name__, exc)
            return {"checks": "fail"}

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="paywatch-heartbeat", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.beat()
            self._stopped.wait(self.interval_s)

    def stop(self) -> None:
        """Stop the thread and send the final `stopping` beat (once, if any beat was sent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._seq:
            self._beat("stopping")


class ProcessHeartbeat:
    """A paywatch process's own heartbeat as contract events, for processes driven by their own
    loop (a Kafka stage's tick, the embedded backend's tick): `due(now)` returns a beat once per
    interval, `stopping(now)` the final one of a planned stop."""

    def __init__(self, service: Service, interval_s: float, checks: Checks | None = None) -> None:
        self.service = service
        self.interval_s = interval_s
        self._sender = HeartbeatSender(self._record, interval_s, checks)
        self._beats: list[Event] = []
        self._at: datetime | None = None
        self._next = 0.0

    def _record(self, section: dict[str, Any]) -> None:
        assert self._at is not None
        service, at = self.service, self._at
        self._beats.append(
            Event(
                timestamp=at,
                event=EventMeta(
                    id=stable_id("heartbeat", service.name, service.instance.id, at.isoformat(), section["seq"]),
                    dataset=HEARTBEAT,
                ),
                service=service,
                heartbeat=msgspec.convert(section, Heartbeat),
            )
        )

    def _take(self, at: datetime, send: Callable[[], None]) -> list[Event]:
        self._at = at
        send()
        beats, self._beats = self._beats, []
        return beats

    def due(self, now: datetime) -> list[Event]:
        """A beat if an interval has passed since the last one (by `now`), else nothing."""
        if now.timestamp() < self._next:
            return []
        self._next = now.timestamp() + self.interval_s
        return self._take(now, self._sender.beat)

    def stopping(self, now: datetime) -> list[Event]:
        """The `stopping` beat that tells a planned stop apart from a death (once)."""
        return self._take(now, self._sender.stop)
