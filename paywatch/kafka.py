"""Kafka wiring shared by every stage: client configs from settings, topic creation.

Only configuration lives here; each stage owns its produce/consume loop."""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from paywatch.secrets import read_secret
from paywatch.settings import KafkaSettings


class _EachOncePerWindow(logging.Filter):
    """librdkafka repeats a failing connection's error on every reconnect (several a second);
    let each distinct message (numbers aside) through once per window."""

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        if now - self.last.get(key, -self.window_s) < self.window_s:
            return False
        self.last[key] = now
        return True


# librdkafka's own log goes through paywatch's logging (same format, PAN masking), warnings
# and errors only, each once a minute; instead of raw "%3|...|FAIL|..." lines on stderr.
LIBRDKAFKA_LOG = logging.getLogger("paywatch.kafka.librdkafka")
log = logging.getLogger("paywatch.kafka")
LIBRDKAFKA_LOG.setLevel(logging.WARNING)
LIBRDKAFKA_LOG.addFilter(_EachOncePerWindow())


def _base(settings: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        **settings.client,
    }
    password = read_secret(settings.sasl_password_env)
    if password:
        conf["sasl.password"] = password
    return conf


def producer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retried send never duplicates, a lost broker never loses an ack'd event."""
    return {
        **_base(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        **overrides,
    }


def consumer_config(settings: KafkaSettings, consumer_group: str, **overrides: Any) -> dict[str, Any]:
    """Manual commits: offsets move only after the work for them is durable downstream."""
    return {
        **_base(settings),
        "group.id": consumer_group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        **overrides,
    }


def ensure_compacted(settings: KafkaSettings, name: str) -> None:
    """Make a topic compacted (only the latest message per key is kept): a feed of current states."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", name, incremental_configs=[entry])
    admin = AdminClient(_base(settings))  # kept referenced until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def ensure_topics(settings: KafkaSettings, names: list[str], partitions: int = 6) -> None:
    """Create topics that do not exist yet (idempotent; an existing topic is left as it is)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(_base(settings))
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=30)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {name}: {exc}") from exc
    # Created is not yet usable: the broker's metadata follows the controller a moment later (an
    # entry with an error and no partitions, or partitions without a leader), and a caller that
    # reads partition counts right after must find every topic whole.
    deadline = time.monotonic() + 30
    while not _all_ready(admin.list_topics(timeout=10).topics, names):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {names} created but not ready in the broker's metadata after 30 s")
        time.sleep(0.1)


def _all_ready(topics: dict[str, Any], names: list[str]) -> bool:
    return all(_ready(topics.get(n)) for n in names)


def _ready(topic: Any) -> bool:
    """A topic's metadata entry says it can be used: no error, partitions, each with a leader."""
    return (
        topic is not None
        and topic.error is None
        and bool(topic.partitions)
        and all(p.leader >= 0 for p in topic.partitions.values())
    )


def commit(consumer: Any, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets synchronously. A commit the group refuses (it is rebalancing, or this member's
    generation is over) or that fails transiently (coordinator moving, broker restarting) is logged,
    not raised: the work is already durable downstream, and whoever reads the partition next re-reads
    from the last commit, which every stage's idempotency keys absorb. Anything else (not authorised,
    a fatal producer-side state) raises: a stage that can never commit must not run on as if it could."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    if not offsets:
        return
    survivable = {
        # refused: the group is rebalancing, or this member's generation is over
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._MAX_POLL_EXCEEDED,
        # transient: the coordinator is moving or a broker restarting (librdkafka does not flag
        # a failed commit's error as retriable, so they are named)
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError) or err.fatal() or err.code() not in survivable:
            raise
        log.warning("offset commit refused; the partitions' next reader re-reads from the last commit: %s", exc)


def key_partition(key: str, partitions: int) -> int:
    """The partition librdkafka's default (consistent) partitioner gives a key: crc32 % count.
    Stable across processes, unlike hash()."""
    return zlib.crc32(key.encode()) % partitions


T = TypeVar("T")


def retrying(call: Callable[[], T], attempts: int = 20) -> T:
    """Run a metadata call, retrying the transient errors of a freshly created or moving partition
    (no leader yet, leader moved) instead of crashing the stage."""
    from confluent_kafka import KafkaError, KafkaException

    transient_codes = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
    for attempt in range(attempts):
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            transient = isinstance(err, KafkaError) and (err.retriable() or err.code() in transient_codes)
            if not transient or attempt == attempts - 1:
                raise
            log.info("retrying after %s", err)
            time.sleep(0.5)
    raise AssertionError("unreachable")


def end_offset(consumer: Any, topic: str, partition: int) -> int:
    """The partition's end offset (where a reader is caught up)."""
    from confluent_kafka import TopicPartition

    return retrying(lambda: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10))[1]


def start_offsets(consumer: Any, partitions: list[Any], since_ms: int) -> list[Any]:
    """Offsets of the first message at or after `since_ms`; if none, the end offset as of now (not
    OFFSET_END: that resolves only when fetching starts, skipping what was produced meanwhile)."""
    from confluent_kafka import TopicPartition

    wanted = [TopicPartition(p.topic, p.partition, since_ms) for p in partitions]
    found = retrying(lambda: consumer.offsets_for_times(wanted, timeout=10))
    return [
        TopicPartition(p.topic, p.partition, p.offset if p.offset >= 0 else end_offset(consumer, p.topic, p.partition))
        for p in found
    ]


def committed_offsets(consumer: Any, partitions: list[Any]) -> list[Any]:
    """The group's committed offset of each partition (OFFSET_INVALID where it has none yet);
    a partition the coordinator could not answer for raises, so `retrying` can ask again."""
    from confluent_kafka import KafkaException

    def ask() -> list[Any]:
        found = consumer.committed(partitions, timeout=10)
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return found

    return retrying(ask)
