"""The embedded backend's stages in one process: store → detect → alert, and compensate.

The same engines the Kafka stages run (`DetectionEngine`, `AlertRunner`, `CompensationDriver`);
here they are chained by queues instead of topics, and everything they produce is written to
the SQLite store instead of Elasticsearch.

- `ingest` stores a batch (that is the acknowledgement) and queues it for the detectors; it never
  waits on anything else, and refuses with `Overloaded` when the detectors are too far behind.
- The **detect worker** takes events, ticks and compensation outputs off one queue, so the
  detectors see one ordered stream; it is ticked at every whole second of arrival time (the
  `Ticker` replay uses), which makes a restart's replay of the store reproduce the same findings.
- The **alert worker** turns findings into alert changes; each sink delivers them on its own
  thread, so a hung receiver delays only its own pages.
- **Compensation** sends its queries and order-webhook deliveries on its own event loop
  (`CompensationDriver`); its outputs come back through the detect queue.

Before `start()` (simulations, tests, the demo) the same steps run inline in the caller's thread,
so a simulated second is fully judged when `tick` returns.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
import structlog

from paywatch.alerts.model import Alert
from paywatch.alerts.runner import AlertRunner, build_engine, build_sinks
from paywatch.app.config import Config
from paywatch.app.embedded.health import HealthCheck
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import Clock
from paywatch.compensation.driver import CompensationDriver
from paywatch.compensation.engine import Effects
from paywatch.contract import HEARTBEAT, PAYMENT, ContractError, Event
from paywatch.detectors.channel_feed import ChannelBoard
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.timebase import Ticker, to_ms
from paywatch.finding import FINDING, Finding, decode_finding

log = structlog.get_logger("paywatch.app.embedded")

FindingListener = Callable[[Finding], None]
# The detector stage's service name, as the alert stage's stall monitor knows it.
DETECT_STAGE = "paywatch-detect"


class Overloaded(Exception):
    """The detectors are too far behind: the batch was not stored; the client retries later."""


_Work = (
    tuple[Literal["events"], Sequence[Event], datetime | None]
    | tuple[Literal["tick"], datetime]
    | tuple[Literal["findings"], list[Finding]]
)
_AlertWork = tuple[Literal["finding"], Finding] | tuple[Literal["tick"], datetime]


class _Worker:
    """A thread draining one queue until stopped and empty; knows since when it has been busy with
    one item (stuck?)."""

    def __init__(self, name: str, handle: Callable[[Any], None], inbox: queue.Queue[Any]) -> None:
        self.inbox = inbox
        self.busy_since: float | None = None
        self._handle = handle
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                item = self.inbox.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            self.busy_since = time.monotonic()
            try:
                self._handle(item)
            except Exception:  # a bug on one item must not stop the stage for every later one
                log.exception("pipeline_item_failed", worker=self.thread.name)
            finally:
                self.busy_since = None

    def stuck(self, now: float, after_s: float) -> bool:
        busy = self.busy_since
        return not self.thread.is_alive() or (busy is not None and now - busy > after_s)


class Pipeline:
    def __init__(self, config: Config, store: SqliteStore, started_at: datetime, clock: Clock | None = None) -> None:
        self.settings = config.embedded
        self.store = store
        # Live, events are judged at their arrival by this clock (a producer's @timestamp is a claim);
        # without one (simulated time), at the producers' watermark.
        self.clock = clock
        self.detection = DetectionEngine(config.detectors)
        self.horizon = timedelta(seconds=config.detectors.rebuild_horizon_s)
        self.channels = ChannelBoard()  # what GET /v1/channels answers
        sinks, alertmanager = build_sinks(config.alerts)
        self.alerting = AlertRunner(
            config.alerts,
            build_engine(config.alerts, config.kibana.url),
            sinks,
            self._store_docs,
            started_at,
            alertmanager,
            max_waiting_batches=self.settings.max_queued_alert_changes,
        )
        self.compensation: CompensationDriver | None = None
        self.listeners: list[FindingListener] = []
        self.events_in = 0
        self.alert_changes_dropped = 0
        self._ticker = Ticker()
        self._queued_events = 0
        self._work: queue.Queue[_Work] = queue.Queue()
        self._alerts: queue.Queue[_AlertWork] = queue.Queue(self.settings.max_queued_alert_changes)
        self._intake = threading.Lock()  # a batch is stored and queued in one order
        self._count = threading.Lock()
        self._inline = threading.Lock()  # before start: one caller at a time runs the steps
        self._detect: _Worker | None = None
        self._deliver: _Worker | None = None

    # -- entry points ----------------------------------------------------------------------
    def ingest(self, events: Sequence[Event]) -> None:
        """Store a batch of contract events (already validated and PAN-masked) and queue it for
        the detectors. Raises `Overloaded` (nothing stored) when too many are still queued."""
        if not events:
            return
        with self._intake:
            if self._detect is not None and self._queued_events >= self.settings.max_queued_events:
                raise Overloaded(f"{self._queued_events} events are waiting to be judged")
            self.events_in += len(events)
            self._submit(self._store_events(events))

    def tick(self, now: datetime) -> None:
        """Advance the clock: deadlines, windows, heartbeats, alert re-sends, due queries."""
        self._submit(("tick", now))

    def _store_events(self, events: Sequence[Event]) -> _Work:
        """Store events stamped with their arrival (to the millisecond, as the store keeps it, so a
        rebuild judges them at the very same time) and count them as waiting to be judged."""
        arrived = None
        if self.clock is not None:
            now = self.clock.now()
            arrived = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self.store.write(msgspec.to_builtins(list(events)), arrived)
        with self._count:
            self._queued_events += len(events)
        return ("events", events, arrived)

    def _submit(self, item: _Work) -> None:
        self._work.put(item)
        if self._detect is None:
            with self._inline:
                self._drain()

    def _drain(self) -> None:
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            self._step(item)

    # -- the detect worker's steps ------------------------------------------------------------
    def _step(self, item: _Work) -> None:
        if item[0] == "events":
            _, events, arrived = item
            with self._count:
                self._queued_events -= len(events)
            for event in events:
                self._judge(event, arrived)
        elif item[0] == "tick":
            now = item[1]
            self._advance(to_ms(now))
            self.alerting.stall.observe_tick(DETECT_STAGE, now)  # in-process, the detector ticks right here
            self._to_alerts(("tick", now))
            if self.compensation is not None:
                self._apply(self.compensation.tick(now))
        else:
            self._on_findings(item[1])

    def _judge(self, event: Event, arrived: datetime | None) -> None:
        if arrived is not None:
            self._advance(to_ms(arrived))  # every whole second before the arrival, as replay ticks
        if self.compensation is not None:
            self._apply(self.compensation.on_event(event))
        self._on_findings(self.detection.feed(event, arrived))

    def _advance(self, now_ms: int) -> None:
        for second in self._ticker.until(now_ms):
            self._on_findings(self.detection.tick_ms(second))

    def _apply(self, effects: Effects) -> None:
        """Compensation's output goes where the Kafka stage publishes it: audit actions to storage,
        query results and repairs back into the event stream, its findings to alerting — through
        the queue, after what is being judged now."""
        if effects.actions:
            self.store.write(effects.actions)
        if effects.events:
            self._work.put(self._store_events(effects.events))
        if effects.findings:
            self._work.put(("findings", effects.findings))

    def _on_findings(self, findings: list[Finding]) -> None:
        if not findings:
            return
        self.store.write(msgspec.to_builtins(findings))
        for finding in findings:
            self.channels.on_finding(finding)
            self._to_alerts(("finding", finding))
            if self.compensation is not None:
                self._apply(self.compensation.on_finding(finding))
            for listener in self.listeners:
                listener(finding)

    # -- alert delivery ------------------------------------------------------------------
    def _to_alerts(self, item: _AlertWork) -> None:
        if self._deliver is None:
            self._alert_step(item)
            return
        try:
            self._alerts.put_nowait(item)
        except queue.Full:
            if item[0] == "finding":  # ticks are re-sent every second; a lost finding is counted
                self.alert_changes_dropped += 1
                log.error(
                    "alert_queue_full", dropped=self.alert_changes_dropped, fingerprint=item[1].finding.fingerprint
                )

    def _alert_step(self, item: _AlertWork) -> None:
        if item[0] == "finding":
            self.alerting.accept(item[1])
        else:
            self.alerting.tick(item[1])

    def _store_docs(self, doc: dict[str, Any]) -> None:
        self.store.write([doc])

    # -- lifecycle ----------------------------------------------------------------------
    def rebuild(self, now: datetime) -> int:
        """Before `start`: replay the stored events of the last `rebuild_horizon_s` through the
        detectors, by their arrival time, so open orders, windows and the heartbeat table are as
        they were, and rebuild the alert state without paging. A firing alert the history shows
        as paged is only re-sent (Alertmanager keeps it alive, chat sinks skip re-sends); one that
        began while paywatch was down is paged now. The compensator's schedule comes back too
        (`_rebuild_compensation`). Returns how many events were replayed."""
        assert self._detect is None, "rebuild before start"
        self.alerting.catching_up = True
        compensation, self.compensation = self.compensation, None  # it would query and repair again
        # Stored findings as far back as either horizon: those the compensator's reaches are given to
        # it again; the rest only tell the rebuild's re-derived findings from new ones.
        reach = max(self.horizon.total_seconds(), compensation.settings.rebuild_horizon_s if compensation else 0)
        stored = self._findings_since(now - timedelta(seconds=reach)) if compensation is not None else []
        derived: list[Finding] = []
        self.listeners.append(derived.append)
        replayed = 0
        decode = msgspec.json.Decoder(Event).decode
        try:
            for body in self.store.events_since((PAYMENT, HEARTBEAT), now - self.horizon):
                try:
                    event = decode(body)
                except msgspec.ValidationError as exc:  # stored by an older version, say: skipped
                    log.warning("rebuild_skipped_event", reason=str(exc))
                    continue
                arrived, event.event.ingested = event.event.ingested, None  # live, events are judged unstamped
                self._judge(event, arrived if self.clock is not None else None)
                replayed += 1
            self._advance(to_ms(now))
            self._drain()
        finally:
            self.listeners.remove(derived.append)
            self.compensation = compensation
        if compensation is not None:
            self._rebuild_compensation(compensation, now, stored, derived)
        self.alerting.caught_up(now, self._paged)
        log.info("state_rebuilt", events=replayed, open_alerts=len(self.alerting.engine.active()))
        return replayed

    def _findings_since(self, since: datetime) -> list[Finding]:
        found = []
        for body in self.store.events_since((FINDING,), since):
            try:
                found.append(decode_finding(body))
            except ContractError as exc:
                log.warning("rebuild_skipped_finding", reason=str(exc))
        return found

    def _rebuild_compensation(
        self, driver: CompensationDriver, now: datetime, stored: list[Finding], derived: list[Finding]
    ) -> None:
        """The queries lost with the old process are scheduled again: the findings of the
        compensator's horizon it had been given are re-read without producing anything twice
        (`driver.rebuild`); those the rebuild found anew (an order that became overdue while
        paywatch was down) are given as new."""
        since = now - timedelta(seconds=driver.settings.rebuild_horizon_s)
        for finding in stored:
            if finding.timestamp >= since:
                driver.rebuild(finding)
        seen = {finding.event.id for finding in stored}
        for finding in derived:
            if finding.event.id not in seen:
                self._apply(driver.on_finding(finding))

    def _paged(self, alert: Alert) -> bool:
        return self.store.paged(alert.fingerprint, alert.starts_at.isoformat())

    def start(self) -> None:
        """Run the steps on worker threads from now on (the live process)."""
        self._drain()
        self.alerting.wait_for_delivery = False  # each sink on its own thread; nothing waits for a page
        self._detect = _Worker("pipeline-detect", self._step, self._work)  # type: ignore[arg-type]
        self._deliver = _Worker("pipeline-alerts", self._alert_step, self._alerts)  # type: ignore[arg-type]
        self._detect.thread.start()
        self._deliver.thread.start()

    def close(self, timeout_s: float) -> bool:
        """Stop within `timeout_s`: what is queued gets the time to finish; True if it did.
        Anything left is in the store and replayed by `rebuild` on the next start."""
        deadline = time.monotonic() + timeout_s
        clean = True
        for worker in (self._detect, self._deliver):  # in flow order: the detectors' last findings get paged
            if worker is not None:
                worker.stop.set()
                worker.thread.join(max(deadline - time.monotonic(), 0.1))
                clean = clean and not worker.thread.is_alive()
        while self._undelivered() and time.monotonic() < deadline:
            time.sleep(0.05)
        clean = clean and not self._undelivered()
        if self.compensation is not None:
            self.compensation.close(max(deadline - time.monotonic(), 0.5))
        if clean:
            self.alerting.close()
        else:
            log.warning("pipeline_stop_timed_out", queued_events=self._queued_events, undelivered=self._undelivered())
        return clean

    def _undelivered(self) -> int:
        """Alert work not done: findings queued for the alert worker and batches waiting at a sink."""
        return self._alerts.qsize() + sum(waiting for waiting, _ in self.alerting.backlog().values())

    def health_parts(self) -> dict[str, HealthCheck]:
        """The parts `/healthz` reports for the pipeline: the detectors and alert delivery are not
        busy with one item for `stuck_after_s`, compensating queries are getting answers."""
        parts: dict[str, HealthCheck] = {"detectors": self._detectors_health, "alert_delivery": self._delivery_health}
        if self.compensation is not None:
            after = self.settings.stuck_after_s
            parts["compensation"] = functools.partial(_compensation_health, self.compensation, after)
        return parts

    def _detectors_health(self) -> tuple[bool, dict[str, Any]]:
        stuck = self._detect is not None and self._detect.stuck(time.monotonic(), self.settings.stuck_after_s)
        return not stuck, {"backlog": self._queued_events}

    def _delivery_health(self) -> tuple[bool, dict[str, Any]]:
        now, after = time.monotonic(), self.settings.stuck_after_s
        sinks = self.alerting.backlog()
        late = [name for name, (_, since) in sinks.items() if since is not None and now - since > after]
        worker_ok = self._deliver is None or not self._deliver.stuck(now, after)
        return worker_ok and not late and not self.alert_changes_dropped, {
            "backlog": self._alerts.qsize(),
            "sinks": {name: waiting for name, (waiting, _) in sinks.items()},
            "stuck_sinks": late,
            "dropped": self.alert_changes_dropped,
        }


def _compensation_health(driver: CompensationDriver, stuck_after_s: float) -> tuple[bool, dict[str, Any]]:
    ok = not driver.stuck(time.monotonic(), stuck_after_s)
    return ok, {"backlog": driver.io.outstanding, "order_webhook_backlog": driver.io.undelivered}
