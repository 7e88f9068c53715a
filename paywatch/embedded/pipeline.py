"""The embedded backend's stages in one process: store → detect → alert (→ compensate).

The same engines the Kafka stages run (`DetectionEngine`, `AlertRunner`); here they are
chained by function calls instead of topics, and everything they produce is written to
the SQLite store instead of Elasticsearch. One lock serialises events and ticks, so the
detectors see one ordered stream whether events come from HTTP or in-process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from paywatch.alerts.runner import AlertRunner, build_engine, build_sinks
from paywatch.app.config import Config
from paywatch.clock import Clock
from paywatch.contract import Event
from paywatch.detectors.channel_feed import ChannelBoard
from paywatch.detectors.engine import DetectionEngine
from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.finding import Finding, encode_finding

if TYPE_CHECKING:
    from paywatch.compensation.engine import Effects
    from paywatch.embedded.compensation_stage import CompensationStage

FindingListener = Callable[[Finding], None]
# The detector stage's service name, as the alert stage's stall monitor knows it.
DETECT_STAGE = "paywatch-detect"


class Pipeline:
    def __init__(self, config: Config, store: SqliteStore, started_at: datetime, clock: Clock | None = None) -> None:
        self.store = store
        # Live, events are judged at their arrival by this clock (a producer's @timestamp is a claim);
        # without one (simulated time), at the producers' watermark.
        self.clock = clock
        self.detection = DetectionEngine(config.detectors)
        self.channels = ChannelBoard()  # what GET /v1/channels answers
        sinks, alertmanager = build_sinks(config.alerts)
        self.alerting = AlertRunner(
            config.alerts,
            build_engine(config.alerts, config.kibana.url),
            sinks,
            self._store_docs,
            started_at,
            alertmanager,
        )
        self.compensation: CompensationStage | None = None
        self.listeners: list[FindingListener] = []
        self.events_in = 0
        # Re-entrant: compensation effects feed events and findings back in while the lock is held.
        self._lock = threading.RLock()

    def _store_docs(self, doc: dict[str, Any]) -> None:
        self.store.write([doc])

    def ingest(self, events: Sequence[Event]) -> None:
        """Store and judge a batch of contract events (already validated and PAN-masked)."""
        with self._lock:
            self.store.write(msgspec.to_builtins(list(events)))
            self.events_in += len(events)
            arrived = self.clock.now() if self.clock is not None else None
            for event in events:
                if self.compensation is not None:
                    self._apply(self.compensation.on_event(event))
                self._on_findings(self.detection.feed(event, arrived))

    def tick(self, now: datetime) -> None:
        """Advance the clock: deadlines, windows, heartbeats, alert re-sends, due queries."""
        with self._lock:
            self._on_findings(self.detection.tick(now))
            self.alerting.stall.observe_tick(DETECT_STAGE, now)  # in-process, the detector ticks right here
            self.alerting.tick(now)
            if self.compensation is not None:
                self._apply(self.compensation.run_due(now))

    def _apply(self, effects: Effects) -> None:
        """Compensation's output goes where the Kafka stages would publish it: query results and
        repairs back into the event stream, audit actions to storage, its findings to alerting."""
        if effects.actions:
            self.store.write(effects.actions)
        if effects.events:
            self.ingest(effects.events)
        self._on_findings(effects.findings)

    def _on_findings(self, findings: list[Finding]) -> None:
        if not findings:
            return
        self.store.write(msgspec.to_builtins(findings))
        for finding in findings:
            self.channels.on_finding(finding)
            self.alerting.on_finding(encode_finding(finding))
            if self.compensation is not None:
                self._apply(self.compensation.on_finding(finding))
            for listener in self.listeners:
                listener(finding)
