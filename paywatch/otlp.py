"""OpenTelemetry logs in: OTLP log records → contract events.

Services that run an OpenTelemetry SDK export log records over OTLP/HTTP (`POST /v1/logs`,
protobuf or JSON) to the embedded server, or through an OpenTelemetry Collector whose Kafka
exporter writes OTLP-JSON to a topic. A record's attributes and its resource's attributes
(`service.name`, `service.instance.id`, `service.version`) are the contract's fields under their
own names (`payment.order_id`, `event.action`, `heartbeat.seq`, …); the record's time, severity,
body and trace context fill `@timestamp`, `log.level`, `message`, `trace.id`, `span.id`. The
fields then go through the same `Intake.event` as an ECS log line, so an OTLP record is
validated, stored and judged exactly like an SDK event.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import msgspec

from paywatch.contract import ContractError, Event
from paywatch.intake import Intake

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
# OTLP SeverityNumber ranges → ECS log levels (1-4 TRACE … 21-24 FATAL).
SEVERITIES: Final = ("trace", "debug", "info", "warn", "error", "fatal")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_decode_json = msgspec.json.Decoder(dict[str, Any]).decode
_encode_json = msgspec.json.Encoder().encode


class Export(NamedTuple):
    """The outcome of one OTLP export request."""

    events: list[Event]
    rejected: list[tuple[int, str, bytes]]  # (record number from 1, reason, the record's fields as JSON)
    reply: bytes  # ExportLogsServiceResponse in the request's encoding
    reply_type: str


def export_logs(body: bytes, content_type: str, content_encoding: str | None, intake: Intake) -> Export:
    """One `POST /v1/logs` body → events and rejects; ContractError if the body is not OTLP at all."""
    if (content_encoding or "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise ContractError(f"body is not valid gzip: {exc}") from None
    protobuf = content_type.split(";")[0].strip().lower() == PROTOBUF
    request = _from_protobuf(body) if protobuf else _from_json(body)
    events, rejected = log_events(request, intake, ids_base64=protobuf)
    return Export(events, rejected, _reply(len(rejected), rejected, protobuf), PROTOBUF if protobuf else JSON)


def log_events(
    request: dict[str, Any], intake: Intake, *, ids_base64: bool = False
) -> tuple[list[Event], list[tuple[int, str, bytes]]]:
    """An ExportLogsServiceRequest in its JSON form → valid events and (record number, reason, fields)."""
    events: list[Event] = []
    rejected: list[tuple[int, str, bytes]] = []
    for number, fields in enumerate(_records(request, ids_base64), start=1):
        try:
            events.append(intake.event(fields))
        except ContractError as exc:
            rejected.append((number, str(exc), _encode_json(fields)))
    return events, rejected


def decode_request(raw: bytes) -> dict[str, Any]:
    """One Kafka message written by the OpenTelemetry Collector's Kafka exporter (otlp_json)."""
    return _from_json(raw)


def _from_protobuf(body: bytes) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    message = ExportLogsServiceRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise ContractError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    return MessageToDict(message)


def _from_json(body: bytes) -> dict[str, Any]:
    try:
        return _decode_json(body)
    except msgspec.ValidationError as exc:
        raise ContractError(f"not an OTLP/JSON request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ContractError(f"not valid JSON: {exc}") from None


def _records(request: dict[str, Any], ids_base64: bool) -> Iterator[dict[str, Any]]:
    """Each log record's fields: its resource's attributes, then its own (which win)."""
    for resource_logs in _list(request.get("resourceLogs")):
        resource = _attributes(_dict(resource_logs.get("resource")).get("attributes"))
        for scope_logs in _list(resource_logs.get("scopeLogs")):
            for record in _list(scope_logs.get("logRecords")):
                yield _record(_dict(record), resource, ids_base64)


def _record(record: dict[str, Any], resource: dict[str, Any], ids_base64: bool) -> dict[str, Any]:
    fields = {**resource, **_attributes(record.get("attributes"))}
    body = _value(record.get("body"))
    if isinstance(body, dict):  # a structured body: its entries are fields too
        for key, value in body.items():
            fields.setdefault(key, value)
    elif body is not None:
        fields.setdefault("message", body if isinstance(body, str) else _encode_json(body).decode())
    nanos = _int(record.get("timeUnixNano")) or _int(record.get("observedTimeUnixNano"))
    if nanos:
        try:
            stamp = (_EPOCH + timedelta(microseconds=nanos // 1000)).isoformat()
        except OverflowError:  # no date at all: the record, not the request, is rejected for it
            stamp = f"{nanos} ns since 1970"
        fields.setdefault("@timestamp", stamp)
    severity = _int(record.get("severityNumber"))
    if severity and 1 <= severity <= 24:
        fields.setdefault("log.level", SEVERITIES[(severity - 1) // 4])
    elif isinstance(record.get("severityText"), str):
        fields.setdefault("log.level", record["severityText"])
    for name, field in (("traceId", "trace.id"), ("spanId", "span.id")):
        hex_id = _hex(record.get(name), ids_base64)
        if hex_id:
            fields.setdefault(field, hex_id)
    return fields


def _attributes(items: Any) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value")) for item in _list(items) if isinstance(item.get("key"), str)}


def _value(any_value: Any) -> Any:
    """An OTLP AnyValue → a JSON value (int64 arrives as a string in JSON)."""
    if not isinstance(any_value, dict):
        return None
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return _int(any_value["intValue"])
    if "doubleValue" in any_value:
        return any_value["doubleValue"]
    if "boolValue" in any_value:
        return any_value["boolValue"]
    if "kvlistValue" in any_value:
        return _attributes(_dict(any_value["kvlistValue"]).get("values"))
    if "arrayValue" in any_value:
        return [_value(v) for v in _list(_dict(any_value["arrayValue"]).get("values"))]
    if "bytesValue" in any_value:
        return any_value["bytesValue"]
    return None


def _hex(value: Any, base64_encoded: bool) -> str | None:
    """Trace and span ids: hex in OTLP/JSON, base64 in protobuf's JSON mapping; all-zero is none."""
    if not isinstance(value, str) or not value:
        return None
    if base64_encoded:
        try:
            value = base64.b64decode(value).hex()
        except ValueError:
            return None
    return None if not value.strip("0") else value.lower()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _reply(rejected: int, reasons: list[tuple[int, str, bytes]], protobuf: bool) -> bytes:
    """ExportLogsServiceResponse: empty when all were accepted, else partial_success with the count."""
    message = "; ".join(f"record {n}: {reason}" for n, reason, _ in reasons[:10]) if reasons else ""
    if protobuf:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
        return response.SerializeToString()
    if not rejected:
        return b"{}"
    return _encode_json({"partialSuccess": {"rejectedLogRecords": str(rejected), "errorMessage": message}})
