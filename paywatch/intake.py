"""Events as payment services already write them: contract JSON, or ECS JSON log lines.

Java teams log with Log4j 2 (`JsonTemplateLayout` + `EcsLayout`) or logback with an ECS
encoder; their lines carry dotted keys (`"payment.order_id": "…"`, ThreadContext/MDC values,
always strings) and fields paywatch does not read (`log.logger`, `process.thread.name`,
`ecs.version`, `error.stack_trace`, …). `Intake.decode` turns such a line into a contract
`Event`; every reader of producer input (collector, embedded ingest, detectors and
compensation on Kafka, the OTLP mapping) calls it, so a line is judged the same wherever it
enters.

The rules, in one place (docs/contract.md describes them for producers):
- A contract event passes the strict decoder untouched (the fast path).
- Otherwise nested objects and dotted keys are flattened to one namespace; a field given
  both ways is an error. `intake.field_map` then renames the team's own names.
- paywatch reads `@timestamp`, `event.{id,dataset,action,outcome}`, `service.{name,version,
  instance.id}`, every `payment.*` and `heartbeat.*`, `log.level`, `message`,
  `error.{type,message}`, `trace.id`, `span.id`, `labels.*`. Unknown keys under
  `payment.*` and `heartbeat.*` (paywatch's own namespaces) are errors, so a typo is not
  lost; every other field is dropped: the service's log store keeps the whole line.
- Values may be strings (`"1250"`): MDC values are. A fractional amount is still an error.
- Missing `event.id`: derived from the line's content, so a redelivered line is stored once.
- `event.dataset` outside `paywatch.*` (ecs-logging writes `<service>.log`) or missing: a
  heartbeat if `heartbeat.*` is present, a payment if `event.action` is, else an app log.
- `service.instance.id` may come from ECS's `service.node.name` or `host.name`.

A request body (NDJSON) is judged line by line (`judge_lines`): each line is stored or
dead-lettered with its reason on its own, so one bad line — broken UTF-8, a number out of the
contract's range, nesting too deep — never costs the good lines of the same request.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog
from pydantic import Field, field_validator

from paywatch.contract import (
    APP,
    HEARTBEAT,
    MAX_EVENT_BYTES,
    PAYMENT,
    ContractError,
    Event,
    Heartbeat,
    Payment,
    check,
    decode,
)
from paywatch.ids import content_id
from paywatch.pan import DEFAULT, PanSettings, mask_bytes, mask_event, mask_text
from paywatch.settings import Section

_PAYMENT_FIELDS: Final = frozenset(f"payment.{f.encode_name}" for f in msgspec.structs.fields(Payment))
_HEARTBEAT_FIELDS: Final = frozenset(
    f"heartbeat.{f.encode_name}" for f in msgspec.structs.fields(Heartbeat) if f.name != "checks"
)
# Paths paywatch reads, besides the map-valued `labels.*` and `heartbeat.checks.*`.
READ: Final = (
    frozenset(
        {
            "@timestamp",
            "event.id",
            "event.dataset",
            "event.action",
            "event.outcome",
            "service.name",
            "service.version",
            "service.instance.id",
            "log.level",
            "message",
            "error.type",
            "error.message",
            "trace.id",
            "span.id",
        }
    )
    | _PAYMENT_FIELDS
    | _HEARTBEAT_FIELDS
)
MAPS: Final = ("labels.", "heartbeat.checks.")
STRICT_NAMESPACES: Final = ("payment.", "heartbeat.")
# ECS names for "this process of the service", in order of preference.
INSTANCE_FALLBACKS: Final = ("service.node.name", "host.name", "host.hostname")
LEVELS: Final = frozenset({"trace", "debug", "info", "warn", "warning", "error", "critical", "fatal"})

# The reason given for a line that broke paywatch itself rather than the contract (a bug, logged):
# it is dead-lettered like any other, so it cannot stop the rest of its request.
UNJUDGED: Final = "paywatch could not judge this line"

log = structlog.get_logger("paywatch.intake")
_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder(order="sorted").encode


class IntakeSettings(Section):
    """How lines in a team's own field names map onto the contract (the `intake:` section)."""

    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="The team's field name → the contract field it means, applied to ECS/JSON log lines "
        "and OTLP attributes (dotted or nested), e.g. `{orderNo: payment.order_id, bizStatus: payment.status}`. "
        "A target may also be `labels.<name>` to keep a field of your own.",
    )

    @field_validator("field_map")
    @classmethod
    def _targets_are_read(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if target not in READ and not target.startswith(MAPS):
                raise ValueError(f"{source} → {target}: {target} is not a field paywatch reads")
        return value


class Intake:
    """Turns producer input into contract events; one per process, built from the config."""

    def __init__(self, settings: IntakeSettings | None = None) -> None:
        self.field_map = (settings or IntakeSettings()).field_map

    def decode(self, raw: bytes | str, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
        """One message or line → a validated Event, or ContractError with the reason."""
        try:
            return decode(raw, max_bytes=max_bytes)
        except ContractError as strict:
            if len(raw) > max_bytes:
                raise
            try:
                tree = _decode_json(raw)
            except (msgspec.DecodeError, UnicodeError, RecursionError):
                raise strict from None
            if not isinstance(tree, dict):
                raise strict from None  # "Expected `object`, got `array`"
        return self.event(tree)

    def event(self, tree: dict[str, Any]) -> Event:
        """A JSON object in ECS form (nested, dotted or both) → a validated Event."""
        flat: dict[str, Any] = {}
        try:
            _flatten(tree, "", flat)
        except RecursionError:
            raise ContractError("nested too deeply") from None
        for source, target in self.field_map.items():
            if source in flat:
                value = flat.pop(source)
                if flat.get(target, value) != value:
                    raise ContractError(f"{source} (mapped to {target}) and {target} disagree")
                flat[target] = value
        if "event.id" not in flat:
            flat["event.id"] = content_id(_encode_json(flat))
        return _to_event(flat)


def judge_lines(
    body: bytes, intake: Intake, pan: PanSettings = DEFAULT
) -> tuple[list[Event], list[tuple[int, str, bytes]]]:
    """Split an NDJSON body (contract events or ECS log lines) into valid, PAN-masked events and
    (line number, reason, raw line) rejects, reason and raw line PAN-masked too; an event the
    card-number policy rejects is one of them. Every non-blank line gets exactly one verdict."""
    accepted: list[Event] = []
    rejected: list[tuple[int, str, bytes]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            accepted.append(mask_event(intake.decode(line), pan))
        except ContractError as exc:
            rejected.append((number, mask_text(str(exc)), mask_bytes(line, pan)))
        except Exception as exc:  # a bug of ours must cost this line, not the request
            log.exception("line not judged", line=number, error=type(exc).__name__)
            rejected.append((number, f"{UNJUDGED} ({type(exc).__name__})", mask_bytes(line, pan)))
    return accepted, rejected


def _flatten(tree: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in tree.items():
        path = prefix + key
        if isinstance(value, dict):
            _flatten(value, path + ".", out)
        elif value is not None:
            if path in out:
                raise ContractError(f"{path} is given twice (nested and dotted)")
            out[path] = value


def _to_event(flat: dict[str, Any]) -> Event:
    dataset = flat.get("event.dataset")
    if not isinstance(dataset, str) or not dataset.startswith("paywatch."):
        if any(k.startswith("heartbeat.") for k in flat):
            dataset = HEARTBEAT
        elif "event.action" in flat:
            dataset = PAYMENT
        else:
            dataset = APP
        flat["event.dataset"] = dataset
    level = flat.get("log.level")
    if isinstance(level, str):
        flat["log.level"] = level.lower()
        if dataset != APP and level.lower() not in LEVELS:
            del flat["log.level"]  # not read for payments and heartbeats: a custom level must not reject them
    if "service.instance.id" not in flat:
        for name in INSTANCE_FALLBACKS:
            if name in flat:
                flat["service.instance.id"] = flat[name]
                break
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        if path in READ:
            _put(nested, path, value)
        elif path.startswith("labels."):
            _put_map(nested, "labels", path[7:], _label(path, value))
        elif path.startswith("heartbeat.checks."):
            _put_map(nested, "heartbeat.checks", path[17:], value)
        elif path.startswith(STRICT_NAMESPACES):
            raise ContractError(f"unknown field {path}: payment.* and heartbeat.* take only the contract's fields")
    try:
        return check(msgspec.convert(nested, Event, strict=False))
    except msgspec.ValidationError as exc:
        raise ContractError(str(exc)) from None


def _put(nested: dict[str, Any], path: str, value: Any) -> None:
    if path == "@timestamp":
        nested[path] = value
        return
    *parents, leaf = path.split(".")
    for name in parents:
        nested = nested.setdefault(name, {})
    nested[leaf] = value


def _put_map(nested: dict[str, Any], path: str, key: str, value: Any) -> None:
    for name in path.split("."):
        nested = nested.setdefault(name, {})
    nested[key] = value


def _label(path: str, value: Any) -> str:
    """ECS labels are keywords; numbers and booleans written as labels keep their JSON spelling."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return _encode_json(value).decode()
    raise ContractError(f"{path} must be a string, not {type(value).__name__}")
