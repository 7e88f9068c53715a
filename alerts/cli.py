"""`paywatch alert`: consume paywatch.findings, page through the configured sinks, publish every
alert state change to paywatch.alerts (stored by the collector as dataset paywatch.alert).

Rollup needs every finding of a channel in one place, so the process reads *all*
partitions of the findings topic itself (no consumer-group split) and rebuilds its state
from the start of the topic on every start; run two for high availability, as with
Prometheus: Alertmanager deduplicates what both send.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import click
import structlog

from paywatch.clock import Clock, SystemClock
from paywatch.config import Config, ConfigError, load_config

log = structlog.get_logger("paywatch.alerts")
SELF = "paywatch-alert"


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="paywatch.yaml")
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds (demos, tests).")
def alert(config_path: str | None, max_seconds: float | None) -> None:
    """Turn findings into pages for on-call: Alertmanager, webhook, Slack, PagerDuty and the log."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + max_seconds if max_seconds else None
    try:
        run(config, lambda: stop.is_set() or (deadline is not None and time.monotonic() > deadline))
    except ValueError as exc:  # bad rules file, sink without its secret
        raise click.ClickException(str(exc)) from None


def run(config: Config, should_stop: Callable[[], bool], clock: Clock | None = None) -> None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition
    from paywatch.alerts.runner import AlertRunner, build_engine, build_sinks
    from paywatch.collectors.sdk import open_logger

    from paywatch.contract import ContractError, decode
    from paywatch.kafka import consumer_config, ensure_topics, producer_config

    clock = clock or SystemClock()
    settings, topics = config.alerts, config.kafka.topics
    engine = build_engine(settings)
    sinks, alertmanager = build_sinks(settings)
    ensure_topics(config.kafka, [topics.findings, topics.alerts, topics.heartbeats])
    producer = Producer(producer_config(config.kafka))

    def publish(doc: dict) -> None:
        value = json.dumps(doc, separators=(",", ":")).encode()
        producer.produce(topics.alerts, key=doc["alert"]["fingerprint"], value=value)

    runner = AlertRunner(settings, engine, sinks, publish, clock.now(), alertmanager)
    # Our own heartbeats, through the SDK like any service: the detectors watch us too.
    sdk = open_logger(SELF, config=config, checks=lambda: {"findings_lag": not runner.stall.is_stalled(SELF)})
    consumer = Consumer(consumer_config(config.kafka, settings.consumer_group))
    findings = [
        TopicPartition(topics.findings, p, OFFSET_BEGINNING)
        for p in consumer.list_topics(topics.findings, timeout=10).topics[topics.findings].partitions
    ]
    beats = [
        TopicPartition(topics.heartbeats, p, OFFSET_END)
        for p in consumer.list_topics(topics.heartbeats, timeout=10).topics[topics.heartbeats].partitions
    ]
    consumer.assign(findings + beats)
    # Replaying up to the end-of-topic seen at start rebuilds state without paging twice.
    target = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in findings}

    def behind() -> int:
        """Findings still to read up to `target` (what was there at start, or the live end)."""
        done = {tp.partition: max(tp.offset, 0) for tp in consumer.position(findings)}
        return sum(max(target[p] - done[p], 0) for p in target)

    runner.catching_up = any(target.values())
    log.info("alert process started", partitions=len(findings), replay_to=sum(target.values()))
    watched = set(settings.self_monitor.watched_services)
    next_tick = 0.0
    try:
        while not should_stop():
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    log.warning("kafka error", error=str(message.error()))
                elif message.topic() == topics.findings:
                    runner.on_finding(message.value())
                else:
                    try:
                        beat = decode(message.value())
                    except ContractError:
                        continue  # the collector dead-letters broken heartbeats; not ours to judge
                    if beat.heartbeat and beat.service.name in watched:
                        runner.stall.observe_tick(
                            beat.service.name, beat.timestamp, failing=beat.heartbeat.status == "degraded"
                        )
            if runner.catching_up and behind() == 0:
                resent = runner.caught_up(clock.now())
                log.info("alert state rebuilt", active=len(engine.active()), resent=len(resent))
            if not runner.catching_up and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + settings.tick_interval_s
                # Cached: the high watermarks of the latest fetch responses, no broker round trip.
                target = {tp.partition: consumer.get_watermark_offsets(tp, cached=True)[1] for tp in findings}
                runner.stall.observe_lag(SELF, behind())
                runner.tick(clock.now())
            producer.poll(0)
    finally:
        sdk.close()
        producer.flush(10)
        consumer.close()
        for sink in sinks:
            close = getattr(sink, "close", None)
            if close:
                close()
