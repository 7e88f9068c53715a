"""The paywatch event contract, version 1.

One JSON object per message, ECS field names (nested objects, as Elasticsearch stores
them) plus `payment.*` and `heartbeat.*` namespaces where ECS has nothing. The same
structs decode Kafka messages, HTTP ingest bodies and replay files, and generate the
published JSON Schema (`schemas/event.schema.json`), so the contract has one source.

`@timestamp` is event time (when it happened at the producer); `event.ingested` is
processing time, set by paywatch when it stores the event. They are never mixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

CONTRACT_VERSION: Final = "1"
MAX_EVENT_BYTES: Final = 64 * 1024
# Bounds at the contract's edge, so nothing a producer sends overflows downstream: Elasticsearch
# stores integers as `long` (int64), and a heartbeat interval is turned into deadlines (a week:
# longer than any batch job's beat, short enough that deadlines stay dates).
MAX_INT: Final = 2**63 - 1
MAX_INTERVAL_S: Final = 7 * 86400.0

Dataset = Literal["paywatch.payment", "paywatch.heartbeat", "paywatch.app"]
PAYMENT, HEARTBEAT, APP = "paywatch.payment", "paywatch.heartbeat", "paywatch.app"
DATASETS: Final[frozenset[str]] = frozenset(Dataset.__args__)  # type: ignore[attr-defined]

PaymentAction = Literal[
    "order_created",
    "payment_requested",
    "channel_callback",
    "channel_query_result",
    "order_paid",
    "order_closed",
    "refund_requested",
    "refund_succeeded",
]
PAYMENT_ACTIONS: Final[frozenset[str]] = frozenset(PaymentAction.__args__)  # type: ignore[attr-defined]
# Actions that concern one attempt at a channel, so must name both.
ATTEMPT_ACTIONS: Final = frozenset({"payment_requested", "channel_callback", "channel_query_result"})
CHANNEL_ACTIONS: Final = ATTEMPT_ACTIONS | {"refund_requested", "refund_succeeded"}
Outcome = Literal["success", "failure", "unknown"]
ErrorCategory = Literal["user", "channel", "system", "limit"]
HeartbeatStatus = Literal["up", "degraded", "stopping"]

# Structs below are `gc=False`: events never form reference cycles, and a replay or a
# collector batch holds hundreds of thousands of them, which the cycle collector would
# otherwise rescan again and again.
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Timestamp = Annotated[datetime, Meta(tz=True)]
NonNegative = Annotated[int, Meta(ge=0, le=MAX_INT)]


class EventMeta(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    id: Id
    dataset: Dataset
    action: str | None = None
    outcome: Outcome | None = None
    ingested: Timestamp | None = None


class ServiceInstance(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    id: Id


class Service(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    name: Id
    instance: ServiceInstance
    version: str | None = None


class TraceId(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    id: Id


class Payment(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    order_id: Id
    attempt_id: Id | None = None
    channel: str | None = None
    method: str | None = None
    merchant_id: str | None = None
    amount_minor: NonNegative | None = None
    # (?!\n): Python's `$` (msgspec, the jsonschema library) also matches before a final newline
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}(?!\n)$")] | None = None
    status: str | None = None
    error_code: str | None = None
    error_category: ErrorCategory | None = None
    latency_ms: NonNegative | None = None


class Heartbeat(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    interval_s: Annotated[float, Meta(gt=0, le=MAX_INTERVAL_S)]
    seq: NonNegative
    status: HeartbeatStatus
    checks: dict[str, Literal["ok", "fail"]] | None = None


class Log(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    level: Literal["trace", "debug", "info", "warn", "warning", "error", "critical", "fatal"]


class Error(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    type: str | None = None
    message: str | None = None


class Event(Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False, rename={"timestamp": "@timestamp"}):
    """Any event on the wire. Which sections are required depends on `event.dataset`."""

    timestamp: Timestamp
    event: EventMeta
    service: Service
    payment: Payment | None = None
    heartbeat: Heartbeat | None = None
    log: Log | None = None
    message: str | None = None
    error: Error | None = None
    trace: TraceId | None = None
    span: TraceId | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Kafka message key: payments partition by order, everything else by service."""
        if self.payment is not None:
            return self.payment.order_id
        return self.service.name


class ContractError(ValueError):
    """An event that breaks the contract; the message says precisely why."""


_decoder = msgspec.json.Decoder(Event)


def _as_plain(value: object) -> object:
    """A subclass of str, int or float msgspec's encoder does not know (a framework's safe-string
    type, say; enums it knows) is written as the value it holds, as `json.dumps` writes it. Not
    through its own `__str__`, which could say anything: the contract's checks and the
    card-number policy judged the value it holds, so that is what is written."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_as_plain)


def check(event: Event) -> Event:
    """Cross-field rules msgspec types cannot express."""
    ds = event.event.dataset
    if ds == PAYMENT:
        if event.payment is None:
            raise ContractError("`payment` is required when event.dataset is paywatch.payment")
        if event.event.action not in PAYMENT_ACTIONS:
            raise ContractError(f"event.action {event.event.action!r} is not one of {sorted(PAYMENT_ACTIONS)}")
        if event.event.action in CHANNEL_ACTIONS and event.payment.channel is None:
            raise ContractError(f"payment.channel is required for {event.event.action}")
        if event.event.action in ATTEMPT_ACTIONS and event.payment.attempt_id is None:
            raise ContractError(f"payment.attempt_id is required for {event.event.action}")
    elif ds == HEARTBEAT:
        if event.heartbeat is None:
            raise ContractError("`heartbeat` is required when event.dataset is paywatch.heartbeat")
    elif ds == APP and (event.log is None or event.message is None):
        raise ContractError("`log.level` and `message` are required when event.dataset is paywatch.app")
    return event


def decode(raw: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Bytes → validated Event, or ContractError with the reason (for the dead-letter topic)."""
    if len(raw) > max_bytes:
        raise ContractError(f"event is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        return check(_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        raise ContractError(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"not valid JSON: {exc}") from None
    except UnicodeError as exc:
        raise ContractError(f"not valid UTF-8: {exc.reason} at byte {_bad_byte(raw)}") from None
    except RecursionError:
        raise ContractError("nested too deeply") from None


def _bad_byte(raw: bytes | str) -> int:
    """Where in the line the encoding breaks (msgspec reports it within one string only)."""
    try:
        raw.encode() if isinstance(raw, str) else raw.decode()
    except UnicodeError as exc:
        return exc.start  # type: ignore[attr-defined]
    return 0


def encode(event: Event | Service) -> bytes:
    """A contract event (or its service section, which the SDK encodes once) as JSON."""
    return _encoder.encode(event)


def encode_lines(events: Iterable[Event]) -> bytes:
    """Each event's `encode` bytes followed by a newline, in one encoder call (NDJSON) for
    whoever encodes a batch: JSON never holds a raw newline, so splitting on it gives each
    event's own bytes, and one scan of the whole covers every event."""
    return _encoder.encode_lines(events)


def _when(dataset: str, actions: frozenset[str] | None = None) -> dict:
    """A JSON Schema `if`: the event is of this dataset (and one of these actions)."""
    meta: dict = {"properties": {"dataset": {"const": dataset}}, "required": ["dataset"]}
    if actions is not None:
        meta["properties"]["action"] = {"enum": sorted(actions)}
        meta["required"].append("action")
    return {"properties": {"event": meta}, "required": ["event"]}


def _needs(section: str, ref: str | None = None, fields: dict[str, dict] | None = None) -> dict:
    """A JSON Schema `then`: `section` present and not null (with these fields present too)."""
    shape: dict = {"$ref": f"#/$defs/{ref}"} if ref else {"type": "string"}
    if fields:
        shape = {"allOf": [shape, {"required": sorted(fields), "properties": fields}]}
    return {"required": [section], "properties": {section: shape}}


def json_schema() -> dict:
    """The published JSON Schema; tests keep schemas/event.schema.json equal to this.

    msgspec's schema has the types; the per-dataset and per-action rules of `check()` are
    added as `if`/`then`, from the same constants, so a validator using only the schema
    gives the ingest's verdict."""
    schema = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://paywatch.dev/schemas/event/v1"
    schema["title"] = "paywatch event, contract v" + CONTRACT_VERSION
    an_id = {"type": "string", "minLength": 1, "maxLength": 256}
    schema["allOf"] = [
        {
            "if": _when(PAYMENT),
            "then": {
                "required": ["payment"],
                "properties": {
                    "payment": {"$ref": "#/$defs/Payment"},
                    "event": {"required": ["action"], "properties": {"action": {"enum": sorted(PAYMENT_ACTIONS)}}},
                },
            },
        },
        {"if": _when(PAYMENT, CHANNEL_ACTIONS), "then": _needs("payment", "Payment", {"channel": {"type": "string"}})},
        {"if": _when(PAYMENT, ATTEMPT_ACTIONS), "then": _needs("payment", "Payment", {"attempt_id": an_id})},
        {"if": _when(HEARTBEAT), "then": _needs("heartbeat", "Heartbeat")},
        {
            "if": _when(APP),
            "then": {
                "required": ["log", "message"],
                "properties": {"log": {"$ref": "#/$defs/Log"}, "message": {"type": "string"}},
            },
        },
    ]
    return schema
