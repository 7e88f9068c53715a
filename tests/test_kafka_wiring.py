"""The Kafka wiring every stage shares, against a real broker: topics a stage creates are there for
the very next client, and a commit the group refuses (this member's time in the group is over) is
survived, the partition's next owner reading the work again. A detector worker once died on each."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from paywatch.app.cli import user_error
from paywatch.kafka import commit, consumer_config, ensure_topics
from paywatch.settings import KafkaSettings


def test_created_topics_are_visible_to_the_next_client(kafka_bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    names = [f"wiring-{uuid.uuid4().hex[:8]}-{n}" for n in range(5)]
    ensure_topics(settings, names)
    probe = Consumer(consumer_config(settings, "probe"))
    topics = probe.list_topics(timeout=10).topics
    probe.close()
    assert {n: len(topics[n].partitions) for n in names} == dict.fromkeys(names, 6)


def _first(consumer: Consumer, deadline_s: float = 30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            return msg
    raise AssertionError("nothing consumed in 30 s")


def test_a_refused_commit_is_logged_and_the_next_owner_reads_the_work_again(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic, group = f"wiring-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"order o-1 paid")
    producer.flush(10)
    # The broker's floor for a session is 6 s; a member that does not poll for longer leaves the group.
    member = Consumer(consumer_config(settings, group, **{"session.timeout.ms": 6000, "max.poll.interval.ms": 6000}))
    member.subscribe([topic])
    msg = _first(member)
    time.sleep(8)
    with caplog.at_level(logging.WARNING, logger="paywatch.kafka"):
        commit(member, {(topic, 0): msg.offset() + 1})  # refused: must not raise
    assert "offset commit refused" in caplog.text
    member.close()

    owner = Consumer(consumer_config(settings, group))
    owner.subscribe([topic])
    again = _first(owner)
    owner.close()
    assert (again.offset(), again.value()) == (msg.offset(), b"order o-1 paid")


def test_only_an_unreachable_broker_gets_the_hint_to_start_one() -> None:
    down = user_error(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    refused = user_error(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert down is not None and "devstack up kafka" in down
    assert refused is not None and refused.startswith("Kafka: ") and "devstack" not in refused
