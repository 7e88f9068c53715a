"""The emitter SDK that payment services import.

    log = open_logger("payment-gateway", version="2.4.1")
    log.payment("payment_requested", order_id="o-1", attempt_id="a-1", channel="alipay",
                amount_minor=1250, currency="CNY", outcome="unknown")
    log.error("callback signature invalid", order_id="o-1", exc_info=True)
    log.close()

A call takes, in the caller's thread, what belongs to its moment (context, exception, time,
trace) through a structlog processor chain (one step per concern, below) and appends the
call to a bounded in-memory buffer. Everything that can wait happens in a drain thread:
building the contract `Event`, masking card numbers and encoding it (before anything is
sent or spilled), sending, spilling to disk when the transport is unavailable, replaying in
order when it is back.
The caller is never made to wait and never sees an exception; every event that cannot be
delivered is counted in `stats()` and reported in a log line of the `paywatch.sdk` logger.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec
import structlog
from msgspec import UNSET, UnsetType
from opentelemetry import metrics, trace

from paywatch.clock import Clock, SystemClock
from paywatch.collectors.heartbeat import Checks, HeartbeatSender
from paywatch.collectors.sdk_settings import SdkConfig, SdkSettings
from paywatch.collectors.spool import Spool, open_spool
from paywatch.collectors.transports import (
    CallableTransport,
    HttpTransport,
    KafkaTransport,
    Outcome,
    Record,
    Transport,
)
from paywatch.contract import (
    APP,
    HEARTBEAT,
    MAX_EVENT_BYTES,
    PAYMENT,
    ContractError,
    Event,
    EventMeta,
    Id,
    Payment,
    PaymentAction,
    Service,
    Timestamp,
    TraceId,
    check,
    encode,
    encode_lines,
)
from paywatch.contract import Outcome as EventOutcome
from paywatch.pan import DEFAULT, MaskingFilter, PanSettings, encode_masked, mask_text, may_contain_pan
from paywatch.secrets import read_secret
from paywatch.settings import Topics, load_file

try:
    from paywatch import _native as native
except ImportError:  # built without Rust (see `native/`): the Python fast path makes every record
    native = None
if native is not None and not hasattr(native, "payment_lines"):  # a build older than this file
    native = None

log = logging.getLogger("paywatch.sdk")
# The SDK's diagnostics go to the payment service's own logging: no card number may reach it.
log.addFilter(MaskingFilter())

EventDict = dict[str, Any]
Call = tuple[str, EventDict]  # (method, the call's fields with its context, time and trace)
PAYMENT_FIELDS: Final = frozenset(Payment.__struct_fields__)
APP_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
DATASET_OF: Final = {"payment": PAYMENT, "heartbeat": HEARTBEAT, **{level: APP for level in APP_LEVELS}}
COUNTERS: Final = (
    "emitted",  # accepted into the buffer
    "sent",  # acknowledged by the transport straight from the buffer
    "spilled",  # written to the spill file
    "replayed",  # acknowledged by the transport from the spill file
    "dropped_invalid",  # broke the contract; reported as a paywatch.app error event instead
    "dropped_buffer_full",  # the drain thread could not keep up, even by spilling
    "dropped_spill_full",  # undeliverable, and the spill file is at its bound (or disabled)
    "dropped_rejected",  # refused for good by the receiver
    "dropped_closed",  # emitted after close()
    "errors",  # faults inside the SDK itself (the first ones logged with a traceback)
)
# How long a lone event may wait for the drain thread. Callers do not wake it for every event:
# waking a thread makes the caller give up the GIL to it, which is what would make emit slow.
_LINGER_S: Final = 0.01
REPORTED: Final = (*(c for c in COUNTERS if c.startswith("dropped_")), "errors")


class InvalidEvent(Exception):
    """A call whose fields break the contract; the reason says which field and why."""

    def __init__(self, reason: str, fields: EventDict) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


# ---------------------------------------------------------------- processors
# structlog calls the caller's steps (PROCESSORS) with (emitter, method name, event dict): the
# caller's flat keywords plus bound context. The drain thread runs the rest (Emitter._record)
# with the same signature: up to to_ecs_document on the dict, then on the Event.


def add_error_fields(_emitter: Emitter, _method: str, ed: EventDict) -> EventDict:
    """`exc_info=True` (or an exception) becomes ECS error.type / error.message."""
    exc_info = ed.pop("exc_info", None)
    if exc_info is None:  # nearly every call
        return ed
    if exc_info is True:
        exc_info = sys.exc_info()[1]
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        ed.setdefault("error_type", type(exc_info).__qualname__)
        ed.setdefault("error_message", _safe_str(exc_info))
    return ed


def add_event_id(_emitter: Emitter, _method: str, ed: EventDict) -> EventDict:
    """event.id, the end-to-end idempotency key; a caller's own `event_id` is kept."""
    if ed.get("event_id") is None:
        ed["event_id"] = new_event_id()
    return ed


def add_timestamp(emitter: Emitter, _method: str, ed: EventDict) -> EventDict:
    """@timestamp (event time) from the injected clock, at the call, unless the caller gave `timestamp`."""
    if ed.get("timestamp") is None:
        ed["timestamp"] = emitter.clock.now()
    return ed


def to_utc_ms(_emitter: Emitter, _method: str, ed: EventDict) -> EventDict:
    """@timestamp in UTC, whole milliseconds, as the contract stores it."""
    ts = ed["timestamp"]
    if isinstance(ts, datetime) and ts.tzinfo is not None:
        if ts.tzinfo is not UTC:
            ts = ts.astimezone(UTC)
        if ts.microsecond % 1000:
            ts -= _SUB_MILLISECOND[ts.microsecond % 1000]  # 5x cheaper than datetime.replace(microsecond=)
    ed["timestamp"] = ts
    return ed


def add_trace_context(_emitter: Emitter, _method: str, ed: EventDict) -> EventDict:
    """trace.id / span.id of the active OpenTelemetry span, so an event links to its trace."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        ed.setdefault("trace_id", format(ctx.trace_id, "032x"))
        ed.setdefault("span_id", format(ctx.span_id, "016x"))
    return ed


def to_ecs_document(emitter: Emitter, method: str, ed: EventDict) -> EventDict:
    """Flat keywords → the nested ECS document; keywords the contract has no field for become labels.
    Set intersections sort the keywords at C speed: Python touches only those it must fix or move."""
    dataset = DATASET_OF[method]
    first = ed.pop("event", None)
    event: EventDict = {"id": _id(ed.pop("event_id")), "dataset": dataset}
    doc: EventDict = {"@timestamp": ed.pop("timestamp"), "event": event, "service": emitter.service}
    if dataset == PAYMENT:
        event["action"] = first
    elif dataset == APP:
        doc["log"] = {"level": method}
        doc["message"] = _safe_str(first)
    extra = ed.pop("labels") if isinstance(ed.get("labels"), Mapping) else None
    keys = ed.keys()
    for k in keys & _FIXES.keys():
        ed[k] = _FIXES[k](ed[k])
    if dataset == PAYMENT or "order_id" in ed:  # an app log about an order names it in payment.*
        doc["payment"] = {k: ed.pop(k) for k in keys & PAYMENT_FIELDS}
    error: EventDict = {}
    for k in keys & _DOC_FIELDS.keys():
        _DOC_FIELDS[k](doc, event, error, ed.pop(k))
    if error:
        doc["error"] = error
    labels = ed  # what is left, in the caller's order
    for k, v in labels.items():
        if not isinstance(v, str):
            labels[k] = _safe_str(v)
    if extra:
        for k, v in extra.items():
            labels[_safe_str(k)] = v if isinstance(v, str) else _safe_str(v)
    doc["labels"] = labels
    return doc


def _put(section: str, name: str) -> Callable[[EventDict, EventDict, EventDict, Any], None]:
    """Where a keyword with its own ECS field goes: doc[section][name], or doc[section] itself."""
    if section == "event":
        return lambda _doc, event, _error, v: event.__setitem__(name, v)
    if section == "error":
        return lambda _doc, _event, error, v: error.__setitem__(name, v)
    if name:
        return lambda doc, _event, _error, v: doc.__setitem__(section, {name: v})
    return lambda doc, _event, _error, v: doc.__setitem__(section, v)


_DOC_FIELDS: Final = {
    "outcome": _put("event", "outcome"),
    "message": _put("message", ""),
    "heartbeat": _put("heartbeat", ""),
    "error_type": _put("error", "type"),
    "error_message": _put("error", "message"),
    "trace_id": _put("trace", "id"),
    "span_id": _put("span", "id"),
}


def to_contract_event(_emitter: Emitter, _method: str, doc: EventDict) -> Event:
    """Validate the document against the contract; a violation raises InvalidEvent with the reason."""
    try:
        return check(msgspec.convert(doc, Event))
    except (msgspec.ValidationError, ContractError) as exc:
        raise InvalidEvent(str(exc), doc) from None


def to_record(emitter: Emitter, _method: str, event: Event) -> Record:
    """Mask card numbers (or refuse the event, as the `pan` policy says) and encode, before the
    event is buffered, spilled or sent; route: topic by dataset, key `Event.key`. One encoding and
    one scan of its bytes for nearly every event (`encode_masked`)."""
    try:
        value = encode_masked(event, emitter.pan)
    except ContractError as exc:
        raise InvalidEvent(str(exc), msgspec.to_builtins(event)) from None
    if len(value) > MAX_EVENT_BYTES:
        limit = f"event is {len(value)} bytes, over the {MAX_EVENT_BYTES}-byte limit"
        raise InvalidEvent(limit, msgspec.to_builtins(event))  # the report keeps its first 4000 chars
    return Record(emitter.topics[event.event.dataset], event.key, value)


class _PaymentFields(Payment, forbid_unknown_fields=False):
    """`Payment`, converted straight from a whole call's keywords (the others are ignored)."""


class _PaymentCallMeta(msgspec.Struct, forbid_unknown_fields=False, gc=False):
    """The other keywords of a payment call as the contract types them; the ids the caller
    did not give stay UNSET (None would be a value, and an invalid one)."""

    event: PaymentAction
    timestamp: Timestamp
    outcome: EventOutcome | None = None
    event_id: Id | None = None
    trace_id: Id | UnsetType = UNSET
    span_id: Id | UnsetType = UNSET


_Call = TypeVar("_Call", _PaymentFields, _PaymentCallMeta)
# The keywords of a payment call that `payment_records` takes; any other makes labels.
_PAYMENT_CALL_KEYS: Final = PAYMENT_FIELDS | frozenset(_PaymentCallMeta.__struct_fields__)


def payment_records(emitter: Emitter, calls: list[EventDict]) -> list[Record | None]:
    """Each common payment call → its record; None for any other call, which the general path
    then makes or reports. The plainest calls (see `native/src/sdk.rs`) are made by the native
    fast path, in a fifth of the time; the Python fast path makes the rest it can, and all of
    them where the extension was not built. tests/test_native_sdk.py holds the two to the same
    bytes."""
    if native is None or emitter.service_json is None:
        return _python_payment_records(emitter, calls)
    lines = native.payment_lines(calls, emitter.service_json, UTC, _NATIVE_ID_PREFIX, MAX_EVENT_BYTES)
    topic = emitter.topics[PAYMENT]
    made = [None if v is None else Record(topic, call["order_id"], v) for call, v in zip(calls, lines, strict=True)]
    if left := [i for i, record in enumerate(made) if record is None]:
        for i, record in zip(left, _python_payment_records(emitter, [calls[i] for i in left]), strict=True):
            made[i] = record
    return made


def _python_payment_records(emitter: Emitter, calls: list[EventDict]) -> list[Record | None]:
    """Each common payment call (contract fields only, each of the type the contract wants) →
    its record, with no document dict: msgspec conversions validate the callers' keywords (one
    call for the whole batch), each Event is built from structs and checked, the batch is
    encoded and scanned for card numbers at once. The service section is the emitter's,
    validated once. None, having changed nothing, for any other call (labels, an id or amount
    to fix, a value the contract refuses, bytes that may hold a card number): the general path
    (`to_ecs_document` … `to_record`) then makes it, and says why it is invalid.
    tests/test_sdk_fast_path.py holds the two to the same bytes."""
    out: list[Record | None] = [None] * len(calls)
    service = emitter.service_struct
    if service is None:
        return out
    if all(map(_PAYMENT_CALL_KEYS.issuperset, calls)):  # nearly every batch: a loop at C speed
        taken: Sequence[int] = range(len(calls))
        fields = calls
    else:
        taken = [i for i, ed in enumerate(calls) if _PAYMENT_CALL_KEYS.issuperset(ed)]
        fields = [calls[i] for i in taken]
    made: list[int] = []
    events: list[Event] = []
    payments, metas = _convert_each(fields, _PaymentFields), _convert_each(fields, _PaymentCallMeta)
    for i, payment, call in zip(taken, payments, metas, strict=True):
        if payment is None or call is None:
            continue
        ts = call.timestamp
        if ts.tzinfo is not UTC:
            continue
        if sub_ms := ts.microsecond % 1000:
            ts -= _SUB_MILLISECOND[sub_ms]
        # Positional where the order is the structs' own (@timestamp, event, service, payment;
        # id, dataset, action, outcome): msgspec builds those faster than from keywords.
        event = Event(
            ts,
            EventMeta(call.event_id or new_event_id(), PAYMENT, call.event, call.outcome),
            service,
            payment,
            trace=None if call.trace_id is UNSET else TraceId(call.trace_id),
            span=None if call.span_id is UNSET else TraceId(call.span_id),
        )
        try:
            check(event)
        except ContractError:
            continue
        made.append(i)
        events.append(event)
    if not events:
        return out
    lines = encode_lines(events)
    scan_each = may_contain_pan(lines)  # nearly always False: then no event of the batch can hold one
    topic = emitter.topics[PAYMENT]
    for i, event, value in zip(made, events, lines.split(b"\n")[:-1], strict=True):
        if len(value) <= MAX_EVENT_BYTES and not (scan_each and may_contain_pan(value)):
            out[i] = Record(topic, event.payment.order_id, value)  # type: ignore[union-attr]
    return out


def _convert_each(calls: list[EventDict], into: type[_Call]) -> list[_Call | None]:
    """Each call as `into`, None where the conversion refuses it; one msgspec call for a batch of
    valid calls, and one per call only when some call is invalid."""
    try:
        return msgspec.convert(calls, list[into])  # type: ignore[valid-type]
    except msgspec.ValidationError:
        pass
    out: list[_Call | None] = []
    for ed in calls:
        try:
            out.append(msgspec.convert(ed, into))
        except msgspec.ValidationError:
            out.append(None)
    return out


def hand_over(_emitter: Emitter, method: str, ed: EventDict) -> tuple[tuple[Call], dict[str, Any]]:
    """The last step in the caller's thread: the call, with everything that belongs to its moment
    (context, exception, time, trace), goes to the emitter as it is. A `labels` mapping is
    copied, since the drain thread reads it a moment later."""
    if "labels" in ed and isinstance(labels := ed["labels"], Mapping):  # isinstance(x, Mapping) is slow
        ed["labels"] = dict(labels)
    return ((method, ed),), {}


# In the caller's thread: only what must be taken at the moment of the call.
PROCESSORS: Final = [
    structlog.contextvars.merge_contextvars,
    add_error_fields,
    add_timestamp,
    add_trace_context,
    hand_over,
]


def _safe_str(value: Any) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _format(message: Any, args: tuple[Any, ...]) -> str:
    try:
        return _safe_str(message) % args
    except Exception:  # a format that does not fit its arguments still says everything
        return " ".join(_safe_str(x) for x in (message, *args))


def _as_json(value: Any) -> str:
    try:
        return msgspec.json.encode(value, enc_hook=_safe_str).decode()
    except Exception:
        return _safe_str(value)


def _id(value: Any) -> Any:
    """Numeric ids (snowflake order numbers) are sent as the strings the contract wants."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _whole_ms(value: Any) -> Any:
    return round(value) if isinstance(value, float) and value == value and abs(value) < 2**62 else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


_SUB_MILLISECOND: Final = tuple(timedelta(microseconds=us) for us in range(1000))


def _id_prefix() -> str:
    """The random part of this process's event ids (RFC 9562 version 8 layout), drawn again until
    no id can hold a run of 13+ digits: the card-number scan then passes every id at once, and no
    event is refused because its own id looked like a card. Costs about a tenth of one bit."""
    while True:
        h = uuid.uuid4().hex
        prefix = f"{h[:8]}-{h[8:12]}-8{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-"
        if not may_contain_pan(f"{prefix}{'0' * 12}".encode()):  # the counter at its most digit-like
            return prefix


def _draw_id_prefixes() -> None:
    """This process's random parts of its event ids: one for the ids drawn here, one for those the
    native fast path draws with its own counter. Drawn again in a forked child, which inherits
    the counters: workers forked from one preloaded app would otherwise repeat each other's ids,
    and the collector stores only the first event of an id (the rest count as duplicates)."""
    global _ID_PREFIX, _NATIVE_ID_PREFIX
    _ID_PREFIX = _id_prefix()
    _NATIVE_ID_PREFIX = next(p for p in iter(_id_prefix, None) if p != _ID_PREFIX)


_ID_PREFIX = _NATIVE_ID_PREFIX = ""
_draw_id_prefixes()
os.register_at_fork(after_in_child=_draw_id_prefixes)
_id_counter = itertools.count(1)


def new_event_id() -> str:
    """A UUID string (RFC 9562 version 8): 74 random bits drawn once per process, then a 48-bit
    counter. As unique as uuid4 but ~30x cheaper, and it never gives up the GIL, which a
    uuid4's os.urandom call does, handing the caller's thread to the drain thread mid-call."""
    return f"{_ID_PREFIX}{next(_id_counter):012x}"


_FIXES: Final[dict[str, Callable[[Any], Any]]] = {
    "order_id": _id,
    "attempt_id": _id,
    "merchant_id": _id,
    "event_id": _id,
    "latency_ms": _whole_ms,
    "currency": _upper,
}


# ---------------------------------------------------------------- the logger


class PaymentLogger(structlog.BoundLoggerBase):
    """What a payment service holds. `bind(**context)` returns a logger that adds the context
    (e.g. merchant_id) to every event; all bound loggers share one Emitter."""

    _logger: Emitter

    # Every parameter is optional and positional-only, so no call shape can raise a TypeError
    # into the caller: a missing action or message becomes a counted, reported invalid event.

    def payment(self, action: str | None = None, /, *args: Any, **fields: Any) -> None:
        """A `paywatch.payment` event; `action` is one of the contract's event.action values."""
        if args:
            fields["sdk_extra_arguments"] = args
        self.emit("payment", action, fields)

    def debug(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        self.emit("debug", message, fields, args)

    def info(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        self.emit("info", message, fields, args)

    def warning(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        self.emit("warning", message, fields, args)

    def error(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        self.emit("error", message, fields, args)

    def critical(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        self.emit("critical", message, fields, args)

    def exception(self, message: Any = None, /, *args: Any, **fields: Any) -> None:
        """An error log carrying the exception being handled as error.type / error.message."""
        fields.setdefault("exc_info", True)
        self.emit("error", message, fields, args)

    warn = warning

    def emit(self, method: str, first: Any, fields: Mapping[str, Any], args: tuple[Any, ...] = ()) -> None:
        """The one path every call takes; never raises, never waits. `args` are %-style
        arguments of a log message, as in the standard library."""
        emitter = self._logger
        try:
            if method in APP_LEVELS and APP_LEVELS.index(method) < emitter.min_app_level:
                return
            if args:
                first = _format(first, args)
            emitter.submit(self._process_event(method, first, fields)[0][0])
        except Exception as exc:
            emitter.count("errors", f"{type(exc).__name__}: {exc}", exc=exc)

    def _process_event(self, method_name: str, event: Any, event_kw: Mapping[str, Any]) -> Any:
        """structlog's chain (bound context, then the call's fields, then PROCESSORS) without
        its generic wrapper, which copies the fields twice and inspects what the last step
        returns: on the caller's thread a third of a microsecond is worth saving."""
        event_dict = {**self._context, **event_kw}
        if event is not None:
            event_dict["event"] = event
        for proc in self._processors:
            event_dict = proc(self._logger, method_name, event_dict)
        return event_dict

    @property
    def heartbeat(self) -> HeartbeatSender | None:
        """The heartbeat sender (`.beat()` sends one now), if this logger has one."""
        return self._logger.heartbeat

    def stats(self) -> dict[str, Any]:
        return self._logger.stats()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted so far is delivered; False if the timeout came first."""
        return self._logger.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Final `stopping` heartbeat, deliver what is buffered, spill the rest; idempotent."""
        self._logger.close(timeout)


def _rejection(exc: InvalidEvent, first: str | None) -> dict[str, Any]:
    """The invalid call, kept as text in the report so nothing it said is lost but card numbers
    (masked here, whatever the policy: the report itself must not be refused)."""
    shown = {k: v for k, v in exc.fields.items() if k != "service"}
    return {
        "error_type": "ContractError",
        "error_message": mask_text(exc.reason),
        "sdk_rejected_event": mask_text(_as_json(shown or first))[:4000],
    }


def _valid_service(service: dict[str, Any]) -> Service | None:
    """The service section as the contract's struct, for `payment_records`; None if it breaks the
    contract (every event then goes the general path, which reports why)."""
    try:
        return msgspec.convert(service, Service)
    except msgspec.ValidationError:
        return None


# ---------------------------------------------------------------- the emitter


class Emitter:
    """The pipe between callers and a transport: bounded buffer, drain thread, spill file, counters.

    Only `submit`, `count`, `stats`, `flush` and `close` are called outside the drain thread.
    """

    def __init__(
        self,
        *,
        service: dict[str, Any],
        clock: Clock,
        transport: Transport,
        topics: Topics,
        settings: SdkSettings,
        pan: PanSettings = DEFAULT,
    ) -> None:
        self.service = service
        self.service_struct = _valid_service(service)
        self.service_json = None if self.service_struct is None else encode(self.service_struct)
        self.pan = pan
        self.clock = clock
        self.topics = topics.for_events()
        self.min_app_level = APP_LEVELS.index(settings.app_log_level)
        self.heartbeat: HeartbeatSender | None = None
        self._transport = transport
        self._settings = settings
        # Each call's fields, and its method beside them in a deque of its own: a (method, fields)
        # tuple per waiting call would be one more object for the cycle collector to track, and
        # thousands of them waiting make its collections a tenth of the process's time. A method
        # is appended before its fields and taken after them, so `_buffer` never runs ahead.
        self._buffer: deque[EventDict] = deque()
        self._methods: deque[str] = deque()
        self._capacity = settings.buffer_events
        self._batch = settings.batch_events
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._reasons: dict[str, str] = {}
        self._reported = dict.fromkeys(COUNTERS, 0)
        self._reported_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition()  # notified after each drain round, for flush()
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._in_flight = 0
        # Records made ahead while a batch waits for its acknowledgement (`_prepare`), and the
        # count of calls being made into them: pending for flush(), spilled like calls, and
        # held to the buffer's bound with them.
        self._ready: list[Record] = []
        self._preparing = 0
        self._closed = False
        self._available = True
        self._backoff = settings.retry_interval_s
        self._next_try = 0.0
        self._spool, self._no_spill_reason = self._open_spool(service["name"])
        self._spill_bytes = self._spool.bytes if self._spool else 0
        self._on_disk = self._spool is not None and not self._spool.empty
        self._thread = threading.Thread(target=self._run, name=f"paywatch-sdk-{service['name']}", daemon=True)
        _live.add(self)
        self._thread.start()

    # ---- caller side

    def submit(self, call: Call) -> None:
        with self._lock:
            if self._closed:
                self._counts["dropped_closed"] += 1
                first = self._counts["dropped_closed"] == 1
            elif len(self._buffer) + len(self._ready) >= self._capacity:
                self._counts["dropped_buffer_full"] += 1
                self._reasons["dropped_buffer_full"] = f"buffer of {self._capacity} events full"
                return
            else:
                self._methods.append(call[0])
                self._buffer.append(call[1])
                self._counts["emitted"] += 1
                if len(self._buffer) == self._batch:  # else the drain thread finds it within _LINGER_S
                    self._wake.set()
                return
        if first:  # the drain thread is gone, so this caller says it, once
            log.warning("paywatch sdk: event emitted after close() dropped (counted in dropped_closed)")

    def count(self, counter: str, reason: str, n: int = 1, exc: BaseException | None = None) -> None:
        with self._lock:
            self._counts[counter] += n
            traceback = exc is not None and self._counts[counter] <= 10
        self._reasons[counter] = reason
        if traceback:
            log.error("paywatch sdk: internal error (event dropped): %s", reason, exc_info=exc)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
        in_memory = len(self._buffer) + len(self._ready)  # calls, and records made ahead of sending
        out.update(
            dropped=sum(out[name] for name in COUNTERS if name.startswith("dropped_")),
            buffer_events=in_memory,
            buffer_capacity=self._capacity,
            buffer_fill=in_memory / self._capacity,
            spill_bytes=self._spill_bytes,
            transport=self._transport.name,
            transport_available=self._available,
        )
        return out

    def flush(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self._settings.flush_timeout_s if timeout is None else timeout)
        with self._progress:
            # Read in the order calls move (buffer, made ahead, sent, on disk), and each stage is
            # entered before the previous one is left: a call in between is never missed.
            while self._buffer or self._preparing or self._ready or self._in_flight or self._on_disk:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._progress.wait(min(left, _LINGER_S))
        return True

    def close(self, timeout: float | None = None) -> None:
        if self._closing.is_set():
            return
        atexit.unregister(self.close)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        wait = self._settings.flush_timeout_s if timeout is None else timeout
        self._deadline = time.monotonic() + wait
        self._closing.set()
        self._wake.set()
        self._thread.join(wait + self._settings.send_timeout_s + 3.0)
        if self._thread.is_alive():
            log.error("paywatch sdk: %d events still in memory at close", len(self._buffer) + len(self._ready))
            return
        self._transport.close()
        if self._spool is not None:
            self._spool.close()

    # ---- drain thread

    def _run(self) -> None:
        while True:
            try:
                more = self._step()
            except Exception as exc:
                self.count("errors", f"drain thread: {type(exc).__name__}: {exc}", exc=exc)
                time.sleep(0.1)
                more = True
            self._report_problems()
            with self._progress:
                self._progress.notify_all()
            if not more:
                break
        with self._lock:
            self._closed = True
        try:
            self._spill(self._take(None))
            self._in_flight = 0
        except Exception as exc:
            self.count("errors", f"final spill: {type(exc).__name__}: {exc}", exc=exc)
        self._report_problems(final=True)

    def _step(self) -> bool:
        """One round; False when closing and nothing more can be done now."""
        self._wake.clear()
        if self._closing.is_set() and time.monotonic() >= self._deadline:
            return False
        if self._spool is not None and (self._on_disk or not self._available):
            self._spill(self._take(self._batch))  # new events queue behind those already on disk
            self._in_flight = 0
        if not self._available and time.monotonic() < self._next_try:
            return self._idle(self._next_try - time.monotonic())
        if self._on_disk:
            assert self._spool is not None
            self._replay(self._spool.peek(self._settings.batch_events))
            return True
        batch = self._take(self._batch)
        if not batch:
            return self._idle(_LINGER_S)
        self._send_live(batch)
        return True

    def _idle(self, seconds: float) -> bool:
        if self._closing.is_set():
            return False
        self._wake.wait(min(seconds, _LINGER_S))
        return True

    def _take(self, limit: int | None) -> list[Record]:
        """The records made ahead (`_prepare`), then calls from the buffer as records, up to
        `limit` in all, in their order; `_in_flight` covers them (for flush) until the caller
        resets it."""
        ready = self._ready
        k = len(ready) if limit is None else min(limit, len(ready))
        n = len(self._buffer) if limit is None else max(0, min(limit - k, len(self._buffer)))
        self._in_flight = k + n  # before they leave `_ready` and the buffer: flush never misses them
        records, self._ready = ready[:k], ready[k:]
        self._records(n, records)
        return records

    def _prepare(self) -> None:
        """While the transport waits for the acknowledgement of a batch, the next calls become
        records, a batch at a time, so making them overlaps the wait instead of following it."""
        n = min(self._batch, len(self._buffer))
        if n:
            self._preparing = n  # before they leave the buffer: flush never misses them
            self._records(n, self._ready)
            self._preparing = 0

    def _records(self, n: int, out: list[Record]) -> None:
        """The next n calls leave the buffer as records, in their order: common payment calls
        all at once (`payment_records`), any other through its document."""
        calls = [self._buffer.popleft() for _ in range(n)]
        methods = [self._methods.popleft() for _ in range(n)]
        every = methods.count("payment") == n
        payments = calls if every else [ed for method, ed in zip(methods, calls, strict=True) if method == "payment"]
        try:
            made = payment_records(self, payments)
        except Exception:  # a fault there (it changes nothing) costs only time: the general path follows
            made = [None] * len(payments)
        if every and None not in made:  # nearly every batch
            out.extend(made)  # type: ignore[arg-type]
            return
        made_next = iter(made).__next__
        for method, ed in zip(methods, calls, strict=True):
            record = made_next() if method == "payment" else None
            if record is not None:
                out.append(record)
            else:
                self._record_document(method, ed, out)

    def _record_document(self, method: str, ed: EventDict, out: list[Record]) -> None:
        """One call → its ECS document → one record; an invalid call is counted and reported as
        an error event of the same moment and trace (a report is not itself reported)."""
        first = ed.get("event")
        try:
            doc = to_ecs_document(self, method, to_utc_ms(self, method, add_event_id(self, method, ed)))
            try:
                out.append(to_record(self, method, to_contract_event(self, method, doc)))
            except InvalidEvent as exc:
                self.count("dropped_invalid", exc.reason)
                if "sdk_rejected_event" not in doc["labels"]:
                    self._record_document("error", self._report(method, first, doc, exc), out)
        except Exception as exc:
            self.count("errors", f"{type(exc).__name__}: {exc}", exc=exc)

    def _report(self, method: str, first: Any, doc: EventDict, exc: InvalidEvent) -> EventDict:
        """The error event sent in place of an invalid call: the reason and the document, at the
        call's time (or now, when its time was what was wrong) and in its trace."""
        report: EventDict = _rejection(exc, first)
        report["event"] = f"paywatch sdk dropped an invalid {method} event"
        ts = doc["@timestamp"]
        report["timestamp"] = ts if isinstance(ts, datetime) and ts.tzinfo is not None else self.clock.now()
        for name in ("trace", "span"):
            if isinstance(ref := doc.get(name), dict) and "id" in ref:
                report[f"{name}_id"] = ref["id"]
        return report

    def _keep_waiting(self, waited: float) -> bool:
        """Called by a transport while it waits for an answer. Meanwhile the next calls become
        records (`_prepare`). Once it has gone `send_timeout_s` without an answer, newer events
        go to disk rather than wait in memory; closing past its deadline stops the wait."""
        if waited >= self._settings.send_timeout_s and self._spool is not None:
            if self._available:
                self._available = False
                log.warning(
                    "paywatch sdk: transport %s has not answered for %.0f s; spilling new events to %s",
                    self._transport.name,
                    waited,
                    self._spool.directory,
                )
            sending = self._in_flight
            self._spill(self._take(None))
            self._in_flight = sending
        elif self._available:
            self._prepare()
        self._report_problems()
        return not (self._closing.is_set() and time.monotonic() >= self._deadline)

    def _send(self, records: list[Record]) -> Outcome:
        try:
            return self._transport.send(records, self._keep_waiting)
        except Exception as exc:  # a transport must not raise; if it does, nothing was delivered
            self.count("errors", f"transport {self._transport.name}: {exc}", exc=exc)
            return Outcome.all_retry(len(records), f"{type(exc).__name__}: {exc}")

    def _send_live(self, batch: list[Record]) -> None:
        outcome = self._send(batch)
        self._settle(len(batch), outcome, "sent")
        self._spill([batch[i] for i in outcome.retry])
        self._in_flight = 0

    def _replay(self, items: list[tuple[Any, Record]]) -> None:
        outcome = self._send([r for _, r in items])
        self._settle(len(items), outcome, "replayed")
        retry = set(outcome.retry)
        assert self._spool is not None
        self._spool.mark_done([pos for i, (pos, _) in enumerate(items) if i not in retry])
        self._note_disk()

    def _settle(self, n: int, outcome: Outcome, delivered: str) -> None:
        acked = n - len(outcome.retry) - len(outcome.rejected)
        with self._lock:
            self._counts[delivered] += acked
        if outcome.rejected:
            reason = f"{self._transport.name} refused: {outcome.rejected[0][1]}"
            self.count("dropped_rejected", reason, len(outcome.rejected))
        if outcome.retry:
            self._unavailable(outcome.reason or "not acknowledged", outcome.retry_after_s)
        elif not self._available:
            self._available = True
            self._backoff = self._settings.retry_interval_s
            log.warning("paywatch sdk: transport %s is available again", self._transport.name)

    def _unavailable(self, reason: str, retry_after_s: float | None = None) -> None:
        """The transport is tried again after the backoff, or later if the receiver asked so."""
        if self._available:
            where = f"spilling to {self._spool.directory}" if self._spool else self._no_spill_reason
            log.warning("paywatch sdk: transport %s unavailable (%s); %s", self._transport.name, reason, where)
            self._available = False
        else:
            self._backoff = min(self._backoff * 2, self._settings.retry_max_interval_s)
        self._next_try = time.monotonic() + max(self._backoff, retry_after_s or 0.0)

    def _spill(self, records: list[Record]) -> None:
        if not records:
            return
        written = 0
        reason = self._no_spill_reason
        if self._spool is not None:
            try:
                written = self._spool.append(records)
                reason = f"spill file {self._spool.directory} at its {self._settings.spill_max_bytes}-byte bound"
            except OSError as exc:
                reason = f"cannot write the spill file: {exc}"
        with self._lock:
            self._counts["spilled"] += written
        if written < len(records):
            self.count("dropped_spill_full", reason, len(records) - written)
        self._note_disk()

    def _note_disk(self) -> None:
        if self._spool is not None:
            self._spill_bytes = self._spool.bytes
            self._on_disk = not self._spool.empty

    def _open_spool(self, name: str) -> tuple[Spool | None, str]:
        s = self._settings
        if s.spill_max_bytes == 0:
            return None, "spilling is disabled (sdk.spill_max_bytes = 0)"
        try:
            return open_spool(s.spill_dir.expanduser(), name, s.spill_max_bytes, s.spill_segment_bytes), ""
        except OSError as exc:
            log.error("paywatch sdk: cannot use spill directory %s (%s); spilling is off", s.spill_dir, exc)
            return None, f"no spill file ({exc})"

    def _report_problems(self, final: bool = False) -> None:
        """One log line per kind of loss per interval, with the count since the last line."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self._counts)
        for name in REPORTED:
            new = counts[name] - self._reported[name]
            last = self._reported_at.get(name)
            if new and (final or last is None or now - last >= self._settings.problem_log_interval_s):
                log.warning(
                    "paywatch sdk: %s: %d events (%s); %d in total",
                    name,
                    new,
                    self._reasons.get(name, ""),
                    counts[name],
                )
                self._reported[name] = counts[name]
                self._reported_at[name] = now


# ---------------------------------------------------------------- metrics

_live: weakref.WeakSet[Emitter] = weakref.WeakSet()


def _observe_counts(_options: Any) -> Iterable[metrics.Observation]:
    for emitter in list(_live):
        stats = emitter.stats()
        for name in COUNTERS:
            yield metrics.Observation(stats[name], {"service.name": emitter.service["name"], "state": name})


def _observe_fill(_options: Any) -> Iterable[metrics.Observation]:
    for emitter in list(_live):
        yield metrics.Observation(emitter.stats()["buffer_fill"], {"service.name": emitter.service["name"]})


_meter = metrics.get_meter("paywatch.sdk")
_meter.create_observable_counter(
    "paywatch.sdk.events", [_observe_counts], unit="{event}", description="SDK events by state"
)
_meter.create_observable_gauge(
    "paywatch.sdk.buffer.fill", [_observe_fill], unit="1", description="Fraction of the SDK buffer in use"
)


# ---------------------------------------------------------------- opening


def open_logger(
    service: str,
    *,
    version: str | None = None,
    instance_id: str | None = None,
    config: SdkConfig | None = None,
    transport: Transport | Callable[[list[Event]], object] | None = None,
    clock: Clock | None = None,
    heartbeat: bool = True,
    checks: Checks | None = None,
    **context: Any,
) -> PaymentLogger:
    """A logger for one service, with its drain thread and (unless `heartbeat=False`) its heartbeat
    thread. Open one per process and `bind()` it for context; `close()` it on shutdown (an atexit
    hook does so too). Raises only on bad configuration, never once running.

    `transport`: a Transport, or a function taking a list of Events (in-process delivery);
    by default the one `config.sdk.transport` names (unset: the one `config.backend` reads).
    `clock` stamps @timestamp (simulated services pass a ManualClock). `context` is bound to
    every event (e.g. region="eu").
    """
    config = config or load_file(SdkConfig)
    settings = config.sdk
    emitter = Emitter(
        service={
            "name": service,
            "instance": {"id": instance_id or f"{socket.gethostname()}:{os.getpid()}"},
            **({"version": version} if version else {}),
        },
        clock=clock or SystemClock(),
        transport=_transport(transport, config),
        topics=config.kafka.topics,
        settings=settings,
        pan=config.pan,
    )
    log = PaymentLogger(emitter, processors=PROCESSORS, context=context)
    emitter.heartbeat = HeartbeatSender(
        lambda section: log.emit("heartbeat", None, {"heartbeat": section}),
        settings.heartbeat_interval_s,
        checks,
    )
    if heartbeat:
        emitter.heartbeat.start()
    atexit.register(emitter.close)
    return log


def _transport(given: Transport | Callable[[list[Event]], object] | None, config: SdkConfig) -> Transport:
    if given is not None:
        return given if hasattr(given, "send") else CallableTransport(given)  # type: ignore[arg-type, return-value]
    s = config.sdk
    if (s.transport or ("kafka" if config.backend == "kafka" else "http")) == "http":
        return HttpTransport(s.ingest_url, read_secret(s.ingest_token_env, s.ingest_token_file), s.send_timeout_s)
    return kafka_transport(config)


def kafka_transport(config: SdkConfig) -> Transport:
    """The Kafka transport; paywatch's own Kafka stages (collect, alert) send their heartbeats
    through it whatever `backend` says, since they only run on Kafka."""
    from paywatch.kafka import producer_config

    return KafkaTransport(producer_config(config.kafka), config.sdk.delivery_timeout_s)
