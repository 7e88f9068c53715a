"""The Kafka wiring every stage shares, against a real broker: topics a stage creates are there for
the very next client, a commit the group refuses (this member's time in the group is over) is
survived, the partition's next owner reading the work again, and a stage whose handler re-reads
from before the group's place never moves that place back. A detector worker once died on each of
the first two."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import PartitionMetadata, TopicMetadata

from paywatch.app.cli import user_error
from paywatch.kafka import _ready, commit, consumer_config, ensure_topics
from paywatch.settings import KafkaSettings
from paywatch.stage import Handler, Stage


def _metadata(error: KafkaError | None, leaders: list[int]) -> TopicMetadata:
    topic = TopicMetadata()
    topic.topic, topic.error = "payments", error
    for n, leader in enumerate(leaders):
        partition = PartitionMetadata()
        partition.id, partition.leader = n, leader
        topic.partitions[n] = partition
    return topic


def test_a_topic_is_ready_only_whole() -> None:
    """What the broker answers for a topic it is still creating: an entry with an error and no
    partitions (seen on this broker when asked by name), or partitions without a leader yet. The
    wait after creating topics must look inside the entry, not only for it."""
    assert not _ready(_metadata(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), []))
    assert not _ready(_metadata(None, [1, -1, 1]))
    assert not _ready(_metadata(None, []))
    assert _ready(_metadata(None, [1, 1, 1]))


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
    time.sleep(12)  # twice the interval: librdkafka notices on its own timer, later on a busy machine
    with caplog.at_level(logging.WARNING, logger="paywatch.kafka"):
        commit(member, {(topic, 0): msg.offset() + 1})  # refused: must not raise
    assert "offset commit refused" in caplog.text
    member.close()

    owner = Consumer(consumer_config(settings, group))
    owner.subscribe([topic])
    again = _first(owner)
    owner.close()
    assert (again.offset(), again.value()) == (msg.offset(), b"order o-1 paid")


class _Refusing:
    """A consumer whose commit fails with `code`, as librdkafka reports it."""

    def __init__(self, code: int) -> None:
        self.code = code

    def commit(self, **_: object) -> None:
        raise KafkaException(KafkaError(self.code))


@pytest.mark.parametrize(
    ("code", "survived"),
    [
        (KafkaError.ILLEGAL_GENERATION, True),
        (KafkaError.REBALANCE_IN_PROGRESS, True),
        (KafkaError.COORDINATOR_NOT_AVAILABLE, True),  # retriable: the coordinator is moving
        (KafkaError.GROUP_AUTHORIZATION_FAILED, False),
        (KafkaError.OFFSET_METADATA_TOO_LARGE, False),
    ],
)
def test_only_refusals_and_transient_commit_failures_are_survived(code: int, survived: bool) -> None:
    """A stage that can never commit (not authorised) must stop, not run on re-reading forever."""
    if survived:
        commit(_Refusing(code), {("t", 0): 1})
    else:
        with pytest.raises(KafkaException):
            commit(_Refusing(code), {("t", 0): 1})


class _Rewinding(Handler):
    """Re-reads its partition from the start (as a rebuild does) and stops after one message."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def handle(self, message: Message) -> list:
        self.stop.set()
        return []


def test_a_stage_re_reading_from_the_start_never_moves_its_group_back(kafka_bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topic, group = f"wiring-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for n in range(3):
        producer.produce(topic, f"finding {n}".encode())
    producer.flush(10)
    first = Consumer(consumer_config(settings, group))
    first.subscribe([topic])
    for _ in range(3):
        _first(first)
    first.commit(asynchronous=False)  # the group's place: after all three
    first.close()

    stage = Stage(settings, group, [topic], Handler(), batch=1)
    stage.handler = _Rewinding(stage.stop)
    stage.run()  # reads offset 0 once, commits what it may, stops

    probe = Consumer(consumer_config(settings, group))
    (place,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
    probe.close()
    assert place.offset == 3


def test_only_an_unreachable_broker_gets_the_hint_to_start_one() -> None:
    down = user_error(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    refused = user_error(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert down is not None and "devstack up kafka" in down
    assert refused is not None and refused.startswith("Kafka: ") and "devstack" not in refused
