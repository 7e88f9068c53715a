"""The alert process on Kafka: consume paywatch.findings, page through the configured sinks, publish
every alert state change to paywatch.alerts (stored by the collector as dataset paywatch.alert).

It runs on the shared Kafka loop (`paywatch.stage.Stage`). Rollup needs every finding of a
channel in one place, so one process reads *all* partitions of the findings topic: give
each `paywatch alert` its own `alerts.consumer_group`. It replays the topic from the start
on every start to rebuild its state; run two (each its own group) for high availability,
as with Prometheus: Alertmanager deduplicates what both send.
"""

from __future__ import annotations

import json
from datetime import datetime

import structlog
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from paywatch.alerts.runner import AlertRunner, build_engine, build_sinks
from paywatch.alerts.settings import AlertSettings
from paywatch.clock import Clock, SystemClock
from paywatch.collectors.sdk import kafka_transport, open_logger
from paywatch.collectors.sdk_settings import SdkConfig
from paywatch.contract import ContractError, decode
from paywatch.kafka import ensure_topics
from paywatch.stage import Handler, Output, Stage

log = structlog.get_logger("paywatch.alerts")
SELF = "paywatch-alert"


def build_stage(settings: AlertSettings, sdk: SdkConfig, kibana_url: str, clock: Clock | None = None) -> Stage:
    """The alert process: an `AlertHandler` on the shared Kafka stage loop (not started).
    `sdk` carries the Kafka connection and how our own heartbeats are sent."""
    clock = clock or SystemClock()
    handler = AlertHandler(settings, sdk, kibana_url, clock)  # first: rules and sinks fail before Kafka
    topics = sdk.kafka.topics
    ensure_topics(sdk.kafka, [topics.findings, topics.alerts, topics.heartbeats])
    return Stage(
        sdk.kafka,
        settings.consumer_group,
        [topics.findings, topics.heartbeats],
        handler,
        clock=clock,
        tick_s=settings.tick_interval_s,
    )


class AlertHandler(Handler):
    """Kafka edge of the alert process: findings replayed from the start, heartbeats from now."""

    def __init__(self, settings: AlertSettings, sdk: SdkConfig, kibana_url: str, clock: Clock) -> None:
        self.topics = sdk.kafka.topics
        self.watched = set(settings.self_monitor.watched_services)
        sinks, alertmanager = build_sinks(settings)
        self._out: list[Output] = []
        self.runner = AlertRunner(
            settings, build_engine(settings, kibana_url), sinks, self._publish, clock.now(), alertmanager
        )
        self.findings: dict[int, TopicPartition] = {}
        self.replaying: set[int] = set()
        self._consumer: Consumer | None = None
        self._clock = clock
        # Our own heartbeats, through the SDK like any service: the detectors watch us too.
        self.sdk = open_logger(
            SELF,
            config=sdk,
            transport=kafka_transport(sdk),
            checks=lambda: {"findings_lag": not self.runner.stall.is_stalled(SELF)},
        )

    def _publish(self, doc: dict) -> None:
        value = json.dumps(doc, separators=(",", ":")).encode()
        self._out.append(Output(self.topics.alerts, doc["alert"]["fingerprint"].encode(), value))

    def _drain(self) -> list[Output]:
        out, self._out = self._out, []
        return out

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        self._consumer = consumer
        starts = []
        for tp in partitions:
            if tp.topic == self.topics.findings:
                self.findings[tp.partition] = TopicPartition(tp.topic, tp.partition)
                self.replaying.add(tp.partition)
                starts.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
            else:
                starts.append(TopicPartition(tp.topic, tp.partition, OFFSET_END))
        self.runner.catching_up = bool(self.replaying)
        return starts

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        taken = [tp.partition for tp in partitions if tp.topic == self.topics.findings]
        for partition in taken:
            self.findings.pop(partition, None)
        if taken and self.findings:  # some left: another member joined our group (all go on shutdown)
            log.warning(
                "findings partitions taken by another member: give every paywatch alert its own consumer group",
                partitions=taken,
            )

    def on_eof(self, topic: str, partition: int) -> None:
        if topic != self.topics.findings or not self.runner.catching_up:
            return
        self.replaying.discard(partition)
        if not self.replaying:
            resent = self.runner.caught_up(self._clock.now())
            log.info("alert state rebuilt", active=len(self.runner.engine.active()), resent=len(resent))

    def handle(self, message: Message) -> list[Output]:
        if message.topic() == self.topics.findings:
            self.runner.on_finding(message.value())
        else:
            self._heartbeat(message.value())
        return self._drain()

    def _heartbeat(self, raw: bytes) -> None:
        try:
            beat = decode(raw)
        except ContractError:
            return  # the collector dead-letters broken heartbeats; not ours to judge
        if beat.heartbeat and beat.service.name in self.watched:
            self.runner.stall.observe_tick(beat.service.name, beat.timestamp, beat.heartbeat.status)

    def tick(self, now: datetime) -> list[Output]:
        if self.runner.catching_up:
            return []
        self.runner.stall.observe_lag(SELF, self._lag())
        self.runner.tick(now)
        return self._drain()

    def _lag(self) -> int:
        """Findings not yet read: high watermarks of the latest fetches minus our positions."""
        if self._consumer is None or not self.findings:
            return 0
        positions = self._consumer.position(list(self.findings.values()))
        return sum(
            max(self._consumer.get_watermark_offsets(tp, cached=True)[1] - max(tp.offset, 0), 0) for tp in positions
        )

    def close(self) -> None:
        self.sdk.close()
        self.runner.close()
