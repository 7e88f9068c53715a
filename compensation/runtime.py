"""The compensator on Kafka: the shared stage loop (`paywatch.stage.Stage`) feeds the
compensation driver (`driver.py`, the same one the embedded backend runs) findings
(paywatch.findings) and payment events (payments.events) and ticks it; it publishes what
the driver produced:
`channel_query_result` events to payments.events, audit/repair/refund documents to
paywatch.actions, give-up and unavailable findings to paywatch.findings, and its own
heartbeat to paywatch.heartbeats. Repair and refund actions also go to the order system's
webhook when one is configured (never in dry-run): the driver does that.

Pending queries live in memory: a restart resumes after the committed offsets and loses them
(docs/compensation.md says how to rebuild them with a fresh consumer group).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from datetime import datetime

import structlog
from confluent_kafka import Message

from paywatch.collectors.heartbeat import ProcessHeartbeat
from paywatch.compensation.driver import CompensationDriver
from paywatch.compensation.engine import Effects
from paywatch.compensation.settings import CompensationConfig
from paywatch.contract import ContractError, encode
from paywatch.finding import decode_finding, encode_finding
from paywatch.intake import Intake
from paywatch.kafka import ensure_topics
from paywatch.stage import Handler, Output, Stage, stop_on_signals

log = structlog.get_logger("paywatch.compensation")


class CompensationHandler(Handler):
    """The stage handler: Kafka messages in, the driver's effects out as topic messages."""

    def __init__(self, config: CompensationConfig, driver: CompensationDriver) -> None:
        self.topics = config.kafka.topics
        self.driver = driver
        self.intake = Intake(config.intake)
        self.beats = ProcessHeartbeat(driver.service, config.compensation.heartbeat_interval_s, driver.checks)

    def handle(self, message: Message) -> Iterable[Output]:
        raw = message.value() or b""
        try:
            if message.topic() == self.topics.findings:
                effects = self.driver.on_finding(decode_finding(raw))
            else:
                effects = self.driver.on_event(self.intake.decode(raw))
        except ContractError as exc:  # the collector dead-letters bad input; here it is just skipped
            log.warning("skipped_bad_message", topic=message.topic(), offset=message.offset(), reason=str(exc))
            return []
        return self._outputs(effects)

    def tick(self, now: datetime) -> Iterable[Output]:
        outputs = self._outputs(self.driver.tick(now))
        return outputs + [
            Output(self.topics.heartbeats, beat.service.name.encode(), encode(beat)) for beat in self.beats.due(now)
        ]

    def _outputs(self, effects: Effects) -> list[Output]:
        t = self.topics
        out = [Output(t.payments, e.key.encode(), encode(e)) for e in effects.events]
        out += [Output(t.actions, a["payment"]["order_id"].encode(), json.dumps(a).encode()) for a in effects.actions]
        out += [
            Output(t.findings, (f.payment.order_id if f.payment else f.finding.fingerprint).encode(), encode_finding(f))
            for f in effects.findings
        ]
        return out


def run(config: CompensationConfig, instance: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; the last outputs are flushed and committed before exit."""
    instance_id = instance or f"{socket.gethostname()}-{os.getpid()}"
    t = config.kafka.topics
    ensure_topics(config.kafka, [t.findings, t.payments, t.actions, t.heartbeats])
    driver = CompensationDriver(config.compensation, instance_id)
    handler = CompensationHandler(config, driver)
    stage = Stage(
        config.kafka,
        config.compensation.consumer_group,
        [config.kafka.topics.findings, config.kafka.topics.payments],
        handler,
        tick_s=1.0,
    )
    log.info(
        "compensator_started",
        instance=instance_id,
        dry_run=config.compensation.dry_run,
        channels=sorted(config.compensation.channels),
    )
    stop_on_signals(stage.stop)
    try:
        stage.run()
    finally:
        driver.close()
    log.info("compensator_stopped", instance=instance_id)
