"""The compensator on Kafka: the shared stage loop (`paywatch.stage.Stage`) feeds the
compensation driver (`driver.py`, the same one the embedded backend runs) findings
(paywatch.findings) and payment events (payments.events) and ticks it; it publishes what
the driver produced:
`channel_query_result` events to payments.events, audit/repair/refund documents to
paywatch.actions, give-up and unavailable findings to paywatch.findings, and its own
heartbeat to paywatch.heartbeats. Repair and refund actions also go to the order system's
webhook when one is configured (never in dry-run): the driver does that.

Pending queries live in memory, so a restarted compensator rebuilds them: each findings
partition it is given is re-read from `rebuild_horizon_s` ago up to the group's committed offset,
every finding fed to the driver's `rebuild` (scheduled again, nothing published twice), and no
query is sent until every such partition has caught up, so a finding resolved later in the same
partition is never asked about.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from datetime import datetime

import structlog
from confluent_kafka import Consumer, Message, TopicPartition

from paywatch.clock import SystemClock
from paywatch.collectors.heartbeat import ProcessHeartbeat
from paywatch.compensation.driver import CompensationDriver
from paywatch.compensation.engine import Effects
from paywatch.compensation.settings import CompensationConfig
from paywatch.contract import ContractError, encode
from paywatch.finding import decode_finding, encode_finding
from paywatch.intake import Intake
from paywatch.kafka import ensure_topics, key_partition, retrying, start_offsets
from paywatch.stage import Handler, Output, Stage, stop_on_signals

log = structlog.get_logger("paywatch.compensation")


class CompensationHandler(Handler):
    """The stage handler: Kafka messages in, the driver's effects out as topic messages."""

    def __init__(self, config: CompensationConfig, driver: CompensationDriver) -> None:
        self.topics = config.kafka.topics
        self.driver = driver
        self.intake = Intake(config.intake)
        self.beats = ProcessHeartbeat(driver.service, config.compensation.heartbeat_interval_s, driver.checks)
        self.rebuilding: dict[int, int] = {}  # findings partition → the committed offset it is re-read up to
        self.partitions = 0  # of the findings topic: which partition an order's findings are on

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Findings partitions this group has read before are re-read from the horizon (a rebuild);
        every other partition resumes at its committed offset."""
        findings = [tp for tp in partitions if tp.topic == self.topics.findings]
        if not findings:
            return partitions
        topic = self.topics.findings
        self.partitions = len(retrying(lambda: consumer.list_topics(topic, timeout=10)).topics[topic].partitions)
        since = int((SystemClock().now().timestamp() - self.driver.settings.rebuild_horizon_s) * 1000)
        starts = {tp.partition: tp.offset for tp in start_offsets(consumer, findings, since)}
        for tp in findings:
            if tp.offset >= 0 and starts[tp.partition] < tp.offset:
                self.rebuilding[tp.partition] = tp.offset
        if self.rebuilding:
            log.info("rebuilding", partitions={p: f"{starts[p]}..{u}" for p, u in self.rebuilding.items()})
        return [
            TopicPartition(topic, tp.partition, starts[tp.partition])
            if tp.topic == topic and tp.partition in self.rebuilding
            else tp
            for tp in partitions
        ]

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions if tp.topic == self.topics.findings}
        for p in revoked:
            self.rebuilding.pop(p, None)
        if revoked and self.partitions:
            n = self.partitions
            self.driver.hand_over(lambda order: key_partition(order, n) in revoked)

    def handle(self, message: Message) -> Iterable[Output]:
        raw = message.value() or b""
        try:
            if message.topic() != self.topics.findings:
                return self._outputs(self.driver.on_event(self.intake.decode(raw)))
            until = self.rebuilding.get(message.partition(), -1)
            if message.offset() + 1 >= until:
                self.rebuilding.pop(message.partition(), None)
            if message.offset() < until:
                self.driver.rebuild(decode_finding(raw))
                return []
            return self._outputs(self.driver.on_finding(decode_finding(raw)))
        except ContractError as exc:  # the collector dead-letters bad input; here it is just skipped
            log.warning("skipped_bad_message", topic=message.topic(), offset=message.offset(), reason=str(exc))
            return []

    def on_eof(self, topic: str, partition: int) -> None:
        if topic == self.topics.findings:
            self.rebuilding.pop(partition, None)

    def tick(self, now: datetime) -> Iterable[Output]:
        beats = [
            Output(self.topics.heartbeats, beat.service.name.encode(), encode(beat)) for beat in self.beats.due(now)
        ]
        # No query before every finding that might cancel it has been read; answers still count.
        return self._outputs(self.driver.tick(now, send=not self.rebuilding)) + beats

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
