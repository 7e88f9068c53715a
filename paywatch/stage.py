"""A Kafka stage: consume topics, hand each message to a handler, produce what it returns,
commit offsets only after the producer flushed, and tick the handler on the wall clock.

Every streaming stage (detectors, alerts, compensation) has this same loop; the pure core
sits behind the handler, so the loop is the only place that knows about Kafka.
Delivery is at-least-once: a crash between flush and commit re-delivers a batch, which is
why everything a stage produces carries a deterministic idempotency key (`event.id`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from paywatch.clock import Clock, SystemClock
from paywatch.kafka import commit, committed_offsets, consumer_config, producer_config
from paywatch.settings import KafkaSettings

log = logging.getLogger("paywatch.stage")


class Output(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # None: the producer's partitioner decides by key
    headers: list[tuple[str, bytes]] | None = None


class Handler:
    """What a stage does with its messages. The defaults suit a stateless handler (start where the
    group left off, nothing to prepare or drop, nothing due on a tick); stateful ones override."""

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Prepare state for new partitions, given with the group's committed offsets (OFFSET_INVALID
        where there is none: the reset policy decides); return them with the offsets to start from."""
        return partitions

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions another member now owns."""

    def handle(self, message: Message) -> Iterable[Output]:
        raise NotImplementedError

    def on_eof(self, topic: str, partition: int) -> None:
        """The partition has nothing more to read right now."""

    def tick(self, now: datetime) -> Iterable[Output]:
        """Outputs due at `now` on the wall clock (deadlines, windows)."""
        return ()


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, so a long-running process finishes its batch, flushes and
    commits before exiting instead of dying mid-write."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


class Stage:
    def __init__(
        self,
        kafka: KafkaSettings,
        consumer_group: str,
        topics: list[str],
        handler: Handler,
        *,
        clock: Clock | None = None,
        tick_s: float = 1.0,
        batch: int = 1000,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.handler = handler
        self.topics = topics
        self.clock = clock or SystemClock()
        self.tick_s = tick_s
        self.batch = batch
        self.stop = threading.Event()
        self.producer = Producer(producer_config(kafka))
        self.consumer = Consumer(
            consumer_config(kafka, consumer_group, **{"enable.partition.eof": True, **(consumer_overrides or {})})
        )
        self._failed: list[str] = []
        self._pending = False  # produced since the last flush
        self._committed: dict[tuple[str, int], int] = {}  # the group's place at assignment, per partition

    def produce(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            kwargs: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
            if out.headers:
                kwargs["headers"] = out.headers
            while True:
                try:
                    self.producer.produce(out.topic, out.value, out.key, on_delivery=self._delivered, **kwargs)
                    break
                except BufferError:  # local queue full: let it drain, never drop
                    self.producer.poll(0.1)
            self.producer.poll(0)
            self._pending = True

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err}")

    def _flush(self) -> None:
        self._pending = False
        left = self.producer.flush(30)
        if left or self._failed:
            raise RuntimeError(f"could not deliver {left} outputs; failures: {self._failed[:3]}")

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A handler may re-read from before the group's place (a rebuild); the place itself must
        # not move back, or a crash mid-rebuild would make already-done work look new.
        committed = committed_offsets(consumer, partitions)
        for tp in committed:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        consumer.incremental_assign(self.handler.on_assign(consumer, committed))

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.handler.on_revoke(partitions)
        consumer.incremental_unassign(partitions)
        for tp in partitions:
            self._committed.pop((tp.topic, tp.partition), None)

    def run(self) -> None:
        """Loop until `stop` is set; the final flush and commit happen before returning."""
        self.consumer.subscribe(self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke)
        next_tick = 0.0
        try:
            while not self.stop.is_set():
                offsets: dict[tuple[str, int], int] = {}
                for msg in self.consumer.consume(self.batch, timeout=min(self.tick_s, 0.2)):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self.handler.on_eof(msg.topic(), msg.partition())
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("consumer error: %s", err)
                        continue
                    self.produce(self.handler.handle(msg))
                    offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
                now = self.clock.now()
                if now.timestamp() >= next_tick:
                    next_tick = now.timestamp() + self.tick_s
                    self.produce(self.handler.tick(now))
                if self._pending:
                    self._flush()  # outputs are durable before their inputs are committed
                commit(self.consumer, {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)})
        finally:
            self._flush()
            self.consumer.close()
