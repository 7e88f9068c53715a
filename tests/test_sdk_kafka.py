"""The SDK against a real Kafka broker: routing and keys, and a 30-second broker outage during
which callers keep emitting without waiting, after which every event arrives exactly once."""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError
from polling import wait_for
from test_sdk import emit_latencies_us, p99

from paywatch.app.config import Config
from paywatch.collectors.sdk import PaymentLogger, open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.contract import decode
from paywatch.devstack import free_port
from paywatch.kafka import consumer_config, ensure_topics
from paywatch.settings import KafkaSettings, Topics


def kafka_config(bootstrap: str, tmp_path: Path, topics: Topics | None = None, **sdk: object) -> Config:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topics=topics or Topics())
    ensure_topics(kafka, [kafka.topics.payments, kafka.topics.heartbeats, kafka.topics.logs])
    return Config(backend="kafka", kafka=kafka, sdk=SdkSettings(spill_dir=tmp_path / "spool", **sdk))


def consume(kafka: KafkaSettings, topic: str, expect: int, timeout: float = 120.0) -> list[tuple[str, bytes]]:
    """Every (key, value) on the topic, read from the start until `expect` messages have come and
    every partition is at its end (so a duplicate beyond `expect` would be read too)."""
    consumer = Consumer(consumer_config(kafka, f"sdk-test-{uuid.uuid4()}", **{"enable.partition.eof": True}))
    consumer.subscribe([topic])
    out: list[tuple[str, bytes]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    n_parts = len(consumer.assignment())
                    if len(out) >= expect and len(at_end) >= n_parts > 0:
                        return out
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            at_end.discard(msg.partition())
            out.append((msg.key().decode(), msg.value()))
    finally:
        consumer.close()
    raise AssertionError(f"read {len(out)} of {expect} messages from {topic} in {timeout}s")


@pytest.mark.kafka
def test_events_reach_their_topics_keyed_by_order_and_service(kafka_bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    topics = Topics(payments=f"sdk-{run}.payments", heartbeats=f"sdk-{run}.heartbeats", logs=f"sdk-{run}.logs")
    config = kafka_config(kafka_bootstrap, tmp_path, topics)
    log = open_logger("payment-gateway", config=config, heartbeat=False)
    for i in range(1000):
        log.payment("order_created", order_id=f"o{i % 50}", amount_minor=i, currency="EUR")
    log.heartbeat.beat()
    log.error("bank_b timed out", channel="bank_b")
    assert log.flush(30)
    log.close()
    payments = consume(config.kafka, topics.payments, 1000)
    assert len(payments) == 1000
    for key, value in payments:
        event = decode(value)
        assert event.payment is not None and key == event.payment.order_id
    ids = [decode(v).event.id for _, v in payments]
    assert len(set(ids)) == 1000
    beats = consume(config.kafka, topics.heartbeats, 2)
    assert {key for key, _ in beats} == {"payment-gateway"}
    assert sorted((b.seq, b.status) for _, v in beats if (b := decode(v).heartbeat)) == [(1, "up"), (2, "stopping")]
    ((key, value),) = consume(config.kafka, topics.logs, 1)
    assert key == "payment-gateway" and decode(value).message == "bank_b timed out"
    stats = log.stats()
    assert stats["sent"] == 1003 and stats["spilled"] == 0


class SteadyEmitter(threading.Thread):
    """Emits payment events at a steady rate, like a payment service under load, recording
    each event id and the latency of each call."""

    def __init__(self, log: PaymentLogger, per_second: int) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.period = 1 / per_second
        self.ids: list[str] = []
        self.latencies_us: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            start = len(self.ids)
            self.latencies_us += emit_latencies_us(self._emit_one, 20, min_measured=0)
            assert len(self.ids) == start + 20
            time.sleep(max(0.0, 20 * self.period - 0.001))

    def _emit_one(self, _i: int) -> None:
        event_id = f"outage-{len(self.ids)}"
        self.ids.append(event_id)
        self.log.payment("order_created", order_id=f"o{len(self.ids) % 977}", event_id=event_id)


@pytest.mark.kafka
@pytest.mark.slow
def test_a_30_second_kafka_outage_loses_nothing_and_duplicates_nothing(kafka_factory, tmp_path):
    server = kafka_factory()
    config = kafka_config(server.bootstrap, tmp_path, retry_interval_s=0.5, retry_max_interval_s=2.0)
    log = open_logger("payment-gateway", config=config, heartbeat=False)
    emitter = SteadyEmitter(log, per_second=200)
    emitter.start()
    # a fresh broker may take a while to hand out producer ids; the SDK spills meanwhile
    wait_for(lambda: (s := log.stats())["transport_available"] and s["sent"] > 0, 90, "the SDK to reach Kafka again")

    server.stop()
    outage_started = time.monotonic()
    during_from = len(emitter.latencies_us)
    time.sleep(30)
    during_to = len(emitter.latencies_us)
    assert log.stats()["spilled"] > 0 and log.stats()["transport_available"] is False
    server.start()
    time.sleep(3)
    emitter.running = False
    emitter.join()
    outage_s = time.monotonic() - outage_started

    assert log.flush(120), log.stats()
    stats = log.stats()
    log.close()
    during = emitter.latencies_us[during_from:during_to]
    print(
        f"\n{len(emitter.ids)} events, Kafka down {outage_s:.0f}s; emit latency while down: "
        f"p50 {statistics.median(during):.1f} µs, p99 {p99(during):.1f} µs; stats {stats}"
    )
    assert p99(during) < 1000  # generous; bench/sdk.py reports the real figures

    assert stats["dropped_buffer_full"] == stats["dropped_spill_full"] == stats["dropped_rejected"] == 0
    assert stats["spilled"] == stats["replayed"] > 30 * 150  # the whole outage went through disk
    assert stats["sent"] + stats["replayed"] == len(emitter.ids)
    assert not list((tmp_path / "spool").rglob("*.ndjson"))  # replayed segments are deleted

    arrived = Counter(
        decode(v).event.id for _, v in consume(config.kafka, config.kafka.topics.payments, len(emitter.ids))
    )
    assert set(arrived) == set(emitter.ids)
    assert [i for i, n in arrived.items() if n > 1] == []


@pytest.mark.kafka
def test_close_with_every_broker_down_is_bounded_and_the_next_process_delivers(kafka_bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    topics = Topics(payments=f"sdk-{run}.payments", heartbeats=f"sdk-{run}.heartbeats", logs=f"sdk-{run}.logs")
    nowhere = Config(
        backend="kafka",
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topics=topics),
        sdk=SdkSettings(spill_dir=tmp_path / "spool"),
    )
    down = open_logger("payment-gateway", config=nowhere, heartbeat=False)
    for i in range(100):
        down.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")
    started = time.monotonic()
    down.close(timeout=1)
    assert time.monotonic() - started < 10
    assert down.stats()["spilled"] == 100

    up = open_logger("payment-gateway", config=kafka_config(kafka_bootstrap, tmp_path, topics), heartbeat=False)
    assert up.flush(60)
    up.close()
    assert up.stats()["replayed"] == 100
    messages = consume(KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=topics), topics.payments, 100)
    assert sorted(decode(v).event.id for _, v in messages) == sorted(f"e{i}" for i in range(100))


ROUNDS = 20


def burst(log: PaymentLogger, n: int, tag: str) -> list[str]:
    """n payment calls in a tight loop (faster than the drain thread), each with its own id."""
    ids = [f"{tag}-{i}" for i in range(n)]
    for i, event_id in enumerate(ids):
        log.payment("order_created", order_id=f"o{i % 97}", event_id=event_id, amount_minor=i, currency="EUR")
    return ids


@pytest.mark.kafka
def test_flush_waits_for_the_records_made_ahead_while_a_batch_was_unacknowledged(kafka_bootstrap, tmp_path):
    """While Kafka acknowledges one batch, the drain thread makes the next calls into records.
    Right after that batch settles the buffer is empty and nothing is in flight, and flush()
    is woken: it must still wait for the records made ahead, and each arrives once. Threads
    switch far more often than by default, so flush() has a chance to look in that moment
    (the next test holds that moment still)."""
    run = uuid.uuid4().hex[:8]
    topics = Topics(payments=f"sdk-{run}.payments", heartbeats=f"sdk-{run}.heartbeats", logs=f"sdk-{run}.logs")
    config = kafka_config(kafka_bootstrap, tmp_path, topics, batch_events=500)
    log = open_logger("payment-gateway", config=config, heartbeat=False)
    log.payment("order_created", order_id="warm-up")  # the producer's connection is not what is tested
    assert log.flush(30)
    ids: list[str] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(ROUNDS):
            ids += burst(log, 700, f"r{round_}")  # a batch of 500, then 200 made ahead during its wait
            assert log.flush(30)
            stats = log.stats()
            assert stats["sent"] == 1 + len(ids), stats
            assert stats["buffer_events"] == 0 and stats["spilled"] == stats["dropped"] == 0
    finally:
        sys.setswitchinterval(switch)
    log.close()
    arrived = Counter(decode(v).event.id for _, v in consume(config.kafka, topics.payments, 1 + len(ids)))
    assert sum(arrived.values()) == 1 + len(ids) and all(arrived[i] == 1 for i in ids)


@pytest.mark.kafka
def test_records_made_ahead_are_spilled_on_an_outage_and_delivered_once_after(kafka_bootstrap, tmp_path):
    """Every broker down: the first batch waits in librdkafka, the calls behind it are made into
    records meanwhile; once the send has gone send_timeout_s unanswered those records go to
    disk (the batch itself only when librdkafka gives it up), and a process with Kafka back
    replays each exactly once."""
    run = uuid.uuid4().hex[:8]
    topics = Topics(payments=f"sdk-{run}.payments", heartbeats=f"sdk-{run}.heartbeats", logs=f"sdk-{run}.logs")
    nowhere = Config(
        backend="kafka",
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topics=topics),
        sdk=SdkSettings(spill_dir=tmp_path / "spool", batch_events=100, send_timeout_s=1.0, delivery_timeout_s=4.0),
    )
    down = open_logger("payment-gateway", config=nowhere, heartbeat=False)
    emitter = down._logger
    ids = burst(down, 300, "down")
    # the scenario is what it says: the 200 calls behind the first batch became records in memory
    wait_for(lambda: len(emitter._ready) == 200, 5, "the calls behind the first batch to be made ahead")
    assert down.stats()["buffer_events"] == 200 and down.stats()["spilled"] == 0
    assert not down.flush(0.2)  # they are pending
    wait_for(lambda: down.stats()["spilled"] == 200, 10, "the records made ahead to be spilled")
    assert not emitter._ready and down.stats()["buffer_events"] == 0
    wait_for(lambda: down.stats()["spilled"] == 300, 20, "librdkafka to give the first batch back")
    down.close(timeout=1)
    stats = down.stats()
    assert stats["sent"] == stats["dropped"] == 0 and stats["spilled"] == 300, stats

    up = open_logger("payment-gateway", config=kafka_config(kafka_bootstrap, tmp_path, topics), heartbeat=False)
    assert up.flush(60)
    up.close()
    assert up.stats()["replayed"] == 300
    arrived = Counter(
        decode(v).event.id
        for _, v in consume(KafkaSettings(bootstrap_servers=kafka_bootstrap, topics=topics), topics.payments, 300)
    )
    assert arrived == Counter(ids)


@pytest.mark.kafka
def test_records_made_ahead_stay_pending_for_flush_while_the_transport_is_unavailable(tmp_path):
    """With spilling off and every broker down, the calls behind the first batch are made into
    records; when librdkafka gives that batch up it is dropped (nowhere to spill) and nothing is
    in flight or buffered, yet the records made ahead are still pending: flush() says not
    delivered, stats() counts them in memory, and close() reports them as dropped."""
    run = uuid.uuid4().hex[:8]
    topics = Topics(payments=f"sdk-{run}.payments", heartbeats=f"sdk-{run}.heartbeats", logs=f"sdk-{run}.logs")
    nowhere = Config(
        backend="kafka",
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", topics=topics),
        sdk=SdkSettings(
            spill_dir=tmp_path / "spool",
            spill_max_bytes=0,
            batch_events=100,
            send_timeout_s=0.5,
            delivery_timeout_s=1.0,
            retry_interval_s=60.0,
        ),
    )
    log = open_logger("payment-gateway", config=nowhere, heartbeat=False)
    burst(log, 300, "down")
    wait_for(lambda: log.stats()["dropped_spill_full"] == 100, 20, "librdkafka to give the first batch back")
    assert log.stats()["transport_available"] is False
    assert not log.flush(0.5)  # nothing buffered, nothing in flight: only the 200 made ahead
    stats = log.stats()
    assert stats["buffer_events"] == 200 and stats["sent"] == 0 and stats["dropped"] == 100, stats
    log.close(timeout=0.5)
    stats = log.stats()
    assert stats["emitted"] == stats["dropped_spill_full"] == 300 and stats["buffer_events"] == 0, stats
