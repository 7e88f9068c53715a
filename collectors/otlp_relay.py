"""`paywatch relay-otlp`: OpenTelemetry logs from Kafka onto paywatch's contract topics.

An OpenTelemetry Collector's Kafka exporter (encoding `otlp_json`) writes one
ExportLogsServiceRequest per message, many records of many services in it, partitioned without
regard to orders. This stage reads that topic, turns each record into a contract event with the
same mapping as the embedded server's `POST /v1/logs` (paywatch/otlp.py), masks card numbers,
and publishes it to its topic keyed as the contract says (payments by order, heartbeats by
service), where the collector stores it and the detectors judge it like any SDK event. A
message that is not OTLP, and each record that breaks the contract, go to the dead-letter topic
with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from paywatch.collectors.dlq import INVALID, dead_letter_headers
from paywatch.contract import ContractError, encode
from paywatch.intake import Intake, IntakeSettings
from paywatch.otlp import decode_request, log_events
from paywatch.pan import mask_bytes, mask_event
from paywatch.settings import Topics
from paywatch.stage import Handler, Output

if TYPE_CHECKING:
    from confluent_kafka import Message

STAGE: Final = "otlp-relay"


class OtlpRelay(Handler):
    """The stage's handler: one OTLP/JSON message in, one output per record out."""

    def __init__(self, topics: Topics, intake: IntakeSettings) -> None:
        self.intake = Intake(intake)
        self.topic_of = topics.for_events()
        self.dead_letter = topics.dead_letter

    def handle(self, message: Message) -> list[Output]:
        raw = message.value() or b""
        try:
            request = decode_request(raw)
        except ContractError as exc:
            return [self._dead(message, raw, str(exc))]
        events, rejected = log_events(request, self.intake)
        out = [Output(self.topic_of[e.event.dataset], e.key.encode(), encode(mask_event(e))) for e in events]
        out += [self._dead(message, fields, f"record {n}: {reason}") for n, reason, fields in rejected]
        return out

    def _dead(self, message: Message, value: bytes, reason: str) -> Output:
        headers = dead_letter_headers(message, reason, INVALID, STAGE)
        return Output(self.dead_letter, message.key(), mask_bytes(value), headers=headers)
