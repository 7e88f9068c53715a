"""The alert process around the pure engine: findings and ticks in, pages and documents out.

`AlertRunner` holds no Kafka: it is fed raw findings and clock ticks and talks to the
sinks and a `publish` callable, so its wiring is testable on its own; `cli.py` feeds it
from Kafka, the embedded backend in-process. While `catching_up` (rebuilding state from the
findings topic after a start) nothing is paged; documents are published again, which is
harmless because their `event.id` is derived from the change (storage keeps one). Once
caught up, every alert still firing is re-sent once, so Alertmanager and PagerDuty are
current again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog

from paywatch.alerts.alertmanager import AlertmanagerSink
from paywatch.alerts.delivery import LogSink, Notifier
from paywatch.alerts.document import alert_document
from paywatch.alerts.engine import AlertEngine, Links
from paywatch.alerts.model import Alert, AlertChange, Delivery
from paywatch.alerts.pagerduty import PagerDutySink
from paywatch.alerts.rules import load_rules
from paywatch.alerts.settings import AlertSettings
from paywatch.alerts.slack import SlackSink
from paywatch.alerts.watchdog import StallMonitor, watchdog_change
from paywatch.alerts.webhook import WebhookSink
from paywatch.contract import ContractError
from paywatch.finding import Finding, decode_finding
from paywatch.pan import mask_text
from paywatch.secrets import read_secret

log = structlog.get_logger("paywatch.alerts")

Publish = Callable[[dict], None]


def build_engine(settings: AlertSettings, kibana_url: str) -> AlertEngine:
    links = Links(
        runbook_base_url=settings.runbook_base_url,
        kibana_url=kibana_url,
        kibana_data_view=settings.kibana_data_view,
        kibana_lookback=timedelta(seconds=settings.kibana_lookback_s),
    )
    return AlertEngine(load_rules(settings.rules_file), settings.resend_interval, links)


def build_sinks(settings: AlertSettings) -> tuple[list[Notifier], AlertmanagerSink | None]:
    """The configured sinks (log always), and the Alertmanager sink the watchdog goes to."""
    retry = settings.delivery.retry()
    sinks: list[Notifier] = [LogSink()]
    alertmanager = None
    if settings.alertmanager.urls:
        valid_for = timedelta(seconds=settings.alertmanager.valid_for_s)
        alertmanager = AlertmanagerSink(settings.alertmanager.urls, valid_for, retry)
        sinks.append(alertmanager)
    if settings.webhook.url:
        secret = read_secret(settings.webhook.secret_env, settings.webhook.secret_file)
        if not secret:
            raise ValueError(
                f"alerts.webhook.url is set but no secret: set ${settings.webhook.secret_env} "
                "or alerts.webhook.secret_file"
            )
        sinks.append(WebhookSink(settings.webhook.url, secret, retry))
    slack_url = read_secret(settings.slack.webhook_url_env, settings.slack.webhook_url_file)
    if slack_url:
        sinks.append(SlackSink(slack_url, retry))
    routing_key = read_secret(settings.pagerduty.routing_key_env, settings.pagerduty.routing_key_file)
    if routing_key:
        sinks.append(PagerDutySink(routing_key, settings.pagerduty.url, retry))
    return sinks, alertmanager


class _Lane:
    """One sink's own delivery thread and backlog: a receiver that hangs delays only its own pages.
    Past `cap` batches waiting, a batch is recorded as a failed delivery instead of queued."""

    def __init__(self, sink: Notifier, cap: int) -> None:
        self.sink = sink
        self.cap = cap
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"alert-{sink.name}")
        self.waiting: deque[float] = deque()  # when each batch not yet delivered was handed over

    def submit(self, changes: list[AlertChange]) -> Future[list[Delivery]]:
        if len(self.waiting) >= self.cap:
            refused: Future[list[Delivery]] = Future()
            fingerprints = tuple(c.alert.fingerprint for c in changes)
            refused.set_result([Delivery(self.sink.name, fingerprints, False, 0, error="delivery backlog full")])
            return refused
        self.waiting.append(time.monotonic())
        future = self.pool.submit(self.sink.send, changes)
        future.add_done_callback(lambda _: self.waiting.popleft())  # one thread: batches finish in order
        return future


def _sent(future: Future[list[Delivery]]) -> list[Delivery]:
    try:
        return future.result()
    except Exception as exc:  # a sink bug is a failed delivery, never a lost alert document
        log.error("alert sink raised", error=f"{type(exc).__name__}: {exc}")
        return []


class AlertRunner:
    def __init__(
        self,
        settings: AlertSettings,
        engine: AlertEngine,
        sinks: Sequence[Notifier],
        publish: Publish,
        started_at: datetime,
        watchdog_sink: AlertmanagerSink | None = None,
        max_waiting_batches: int = 1000,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sinks = list(sinks)
        # Each sink delivers on its own thread: one dead receiver retrying never delays the others'
        # pages. With `wait_for_delivery` off (the embedded backend, once live) nothing waits for a
        # delivery: an alert's document is published once every sink has answered.
        self._lanes = [_Lane(sink, max_waiting_batches) for sink in self.sinks]
        self.wait_for_delivery = True
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="alert-watchdog")
        self.publish = publish
        self.catching_up = False
        self.rejected = 0
        self._started_at = started_at
        self._watchdog_sink = watchdog_sink if settings.self_monitor.watchdog else None
        self._watchdog_sent: datetime | None = None
        self._watchdog: Future | None = None
        monitor = settings.self_monitor
        self.stall = StallMonitor(monitor.max_consumer_lag, timedelta(seconds=monitor.max_tick_age_s))
        for service in monitor.watched_services:  # a stage silent since our start is stalled too
            self.stall.observe_tick(service, started_at)

    def on_finding(self, raw: bytes) -> list[AlertChange]:
        """One message of the findings topic; a broken one is logged and counted, never fatal."""
        try:
            finding = decode_finding(raw)
        except ContractError as exc:
            self.rejected += 1
            log.error("finding rejected", reason=str(exc), raw=mask_text(raw.decode(errors="replace"))[:200])
            return []
        return self.accept(finding)

    def accept(self, finding: Finding) -> list[AlertChange]:
        """One finding already decoded (the embedded backend hands them over in-process)."""
        changes = self.engine.on_finding(finding)
        self._emit(changes)
        return changes

    def caught_up(self, now: datetime, paged: Callable[[Alert], bool] | None = None) -> list[AlertChange]:
        """State is rebuilt: re-send whatever is still firing, once. With `paged` (whether the
        history shows this firing alert was paged), an alert that began firing while paywatch was
        down, or whose page never went out, is paged as newly fired instead."""
        self.catching_up = False
        changes = [
            AlertChange(alert, now, page=True, reason="resent" if paged is None or paged(alert) else "fired")
            for alert in self.engine.active()
            if alert.status == "firing"
        ]
        self._emit(changes)
        return changes

    def tick(self, now: datetime) -> list[AlertChange]:
        """Re-sends, self-monitoring and the watchdog; call every few seconds of the clock."""
        changes = self.engine.tick(now)
        for signal in self.stall.check(now):
            changes += self.engine.on_signal(signal)
        self._emit(changes)
        due = self._watchdog_sent is None or now - self._watchdog_sent >= self.settings.resend_interval
        if self._watchdog_sink and due and (self._watchdog is None or self._watchdog.done()):
            # In the background: an unreachable Alertmanager retrying must not stall the loop.
            self._watchdog_sent = now
            self._watchdog = self._pool.submit(self._watchdog_sink.send, [watchdog_change(self._started_at, now)])
        return changes

    def _emit(self, changes: list[AlertChange]) -> list[Delivery]:
        """Deliver, then publish every state change (re-sends are not changes) with its deliveries."""
        if not changes:
            return []
        if self.catching_up:
            self._publish(changes, [])
            return []
        futures = [lane.submit(changes) for lane in self._lanes]
        if self.wait_for_delivery:
            deliveries = [d for future in futures for d in _sent(future)]
            self._publish(changes, deliveries)
            return deliveries
        pending = [len(futures)]
        lock = threading.Lock()

        def answered(_: Future[list[Delivery]]) -> None:
            with lock:
                pending[0] -= 1
                if pending[0]:
                    return
            self._publish(changes, [d for future in futures for d in _sent(future)])

        for future in futures:
            future.add_done_callback(answered)
        return []

    def _publish(self, changes: list[AlertChange], deliveries: list[Delivery]) -> None:
        for change in changes:
            if change.reason != "resent":
                self.publish(alert_document(change, deliveries))

    def backlog(self) -> dict[str, tuple[int, float | None]]:
        """Per sink: batches waiting for delivery, and since when (monotonic) the oldest has waited."""
        return {lane.sink.name: (len(lane.waiting), lane.waiting[0] if lane.waiting else None) for lane in self._lanes}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for lane in self._lanes:
            lane.pool.shutdown(wait=True)
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close:
                close()
