"""The dead-letter topic: every message paywatch cannot store, with the reason, never dropped.

A dead letter keeps the original message value and key byte for byte (so it can be fixed and
replayed) except for card numbers, which are masked like everywhere else in paywatch: a dead
letter is stored too. Headers say why it was refused and where it came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import structlog

from paywatch.pan import mask_bytes, mask_text

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

log = structlog.get_logger("paywatch.dlq")

REASON: Final = "paywatch.reason"
KIND: Final = "paywatch.kind"
STAGE: Final = "paywatch.stage"
SOURCE_TOPIC: Final = "paywatch.source.topic"
SOURCE_PARTITION: Final = "paywatch.source.partition"
SOURCE_OFFSET: Final = "paywatch.source.offset"

# Why a message was refused: it broke the contract, or Elasticsearch refused the document.
INVALID: Final = "invalid"
REJECTED: Final = "rejected"


class DeadLetters:
    """Sends refused messages to the dead-letter topic; `flush` says when all are durable."""

    def __init__(self, producer: Producer, topic: str, stage: str) -> None:
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self._failed: list[tuple[Message, str, str]] = []

    def send(self, message: Message, reason: str, kind: str) -> None:
        headers = dead_letter_headers(message, reason, kind, self._stage)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                return
            if err.retriable():
                self._failed.append((message, reason, kind))
            else:  # e.g. over the broker's size limit: say so loudly, retrying cannot help
                log.error("dead letter not deliverable", error=str(err), reason=reason, **source(message))

        while True:
            try:
                self._producer.produce(
                    self._topic,
                    mask_bytes(message.value() or b""),
                    message.key(),
                    headers=headers,
                    on_delivery=delivered,
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)

    def flush(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for every dead letter to be acknowledged; True when all are.

        Failed deliveries are sent again, so a Kafka outage only delays them."""
        remaining = self._producer.flush(timeout_s)
        failed, self._failed = self._failed, []
        for message, reason, kind in failed:
            self.send(message, reason, kind)
        return remaining == 0 and not failed


def dead_letter_headers(message: Message, reason: str, kind: str, stage: str) -> list[tuple[str, bytes]]:
    """Why a message was refused and where it came from (plus its own headers)."""
    return [
        (REASON, mask_text(reason).encode()),
        (KIND, kind.encode()),
        (STAGE, stage.encode()),
        (SOURCE_TOPIC, (message.topic() or "").encode()),
        (SOURCE_PARTITION, str(message.partition()).encode()),
        (SOURCE_OFFSET, str(message.offset()).encode()),
        *(message.headers() or ()),
    ]


def source(message: Message) -> dict[str, object]:
    """Where a message came from, for logs (never its content)."""
    return {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}


def headers_of(message: Message) -> dict[str, str]:
    """A dead letter's paywatch headers as text (reading the topic back: tools and tests)."""
    return {k: v.decode() for k, v in message.headers() or () if k.startswith("paywatch.") and v}
