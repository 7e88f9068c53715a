"""The SDK's native fast path (`native/src/sdk.rs`, `paywatch._native.payment_lines`) against the
Python fast path it stands in for (`_python_payment_records`): for any payment call, as the
caller's processor chain hands it over, the event it writes is byte for byte the one the Python
fast path writes (but for the event id, when the SDK draws one), and a call it does not take it
leaves to the Python paths (None). tests/test_sdk_fast_path.py holds the Python fast path, and
`payment_records` with both, to the general path."""

from __future__ import annotations

import re
from collections import UserDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from test_sdk_fast_path import COMMON_FIELDS, SDK_ID, payment_calls

from paywatch.app.config import Config
from paywatch.collectors import sdk
from paywatch.collectors.sdk import PaymentLogger, _python_payment_records, open_logger, payment_records
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.contract import MAX_EVENT_BYTES, decode
from paywatch.pan import may_contain_pan

try:
    from paywatch import _native
except ImportError:  # pragma: no cover - test_native.py says what to do
    _native = None

pytestmark = pytest.mark.skipif(_native is None, reason="built without Rust; tests/test_native.py fails for it")

T = datetime(2026, 11, 27, 4, 5, 6, 789123, tzinfo=UTC)
COMMON = {**COMMON_FIELDS, "event": "payment_requested", "timestamp": T}


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaymentLogger]:
    logger = open_logger(
        "payment-gateway",
        config=Config(sdk=SdkSettings(spill_dir=tmp_path_factory.mktemp("spool"))),
        transport=lambda events: None,
        heartbeat=False,
    )
    yield logger
    logger.close(timeout=2)


def native_lines(log: PaymentLogger, calls: list[Any], max_bytes: int = MAX_EVENT_BYTES) -> list[bytes | None]:
    emitter = log._logger
    return _native.payment_lines(calls, emitter.service_json, UTC, sdk._NATIVE_ID_PREFIX, max_bytes)


def python_value(log: PaymentLogger, call: dict[str, Any]) -> bytes | None:
    [record] = _python_payment_records(log._logger, [dict(call)])
    return None if record is None else record.value


def same_value(log: PaymentLogger, call: dict[str, Any]) -> bytes | None:
    """The native event for the call, having checked it is the Python fast path's (or that it
    left the call alone), and that it changed nothing in the call."""
    given = dict(call)
    [ours] = native_lines(log, [call])
    assert call.keys() == given.keys() and all(call[k] is given[k] for k in given), "native changed the call"
    if ours is None:
        return None
    theirs = python_value(log, call)
    assert theirs is not None, f"native took a call the Python fast path leaves: {call}"
    if call.get("event_id") is None:  # each drew its own id: the rest must be the same bytes
        mine, other = msgspec.json.decode(ours)["event"]["id"], msgspec.json.decode(theirs)["event"]["id"]
        assert SDK_ID.match(mine) and mine.startswith(sdk._NATIVE_ID_PREFIX) and not other.startswith(mine[:24])
        ours = ours.replace(mine.encode(), other.encode(), 1)
    assert ours == theirs
    assert not may_contain_pan(ours)
    return ours


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payment_calls())
def test_any_call_is_written_as_the_python_fast_path_writes_it_or_left_to_it(log: PaymentLogger, drawn):
    action, fields = drawn
    _method, call = log._process_event("payment", action, dict(fields))[0][0]
    made = same_value(log, call)
    event("native" if made is not None else "left to the Python paths")


def test_the_common_payment_call_is_taken_and_the_collector_reads_it(log: PaymentLogger):
    value = same_value(log, COMMON)
    assert value is not None
    stored = decode(value)
    assert stored.timestamp == T.replace(microsecond=789000) and stored.key == "order-7"
    assert stored.service.name == "payment-gateway" and stored.payment.amount_minor == 1250  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "timestamp",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 0, 999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 2, 29, 12, 0, 0, 1000, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone(timedelta(0))),  # CPython's UTC singleton
    ],
)
def test_times_at_their_edges_are_written_as_msgspec_writes_them(log: PaymentLogger, timestamp: datetime):
    assert same_value(log, {**COMMON, "timestamp": timestamp}) is not None


class Str(str):
    pass


class Int(IntEnum):
    ONE = 1


class Moment(datetime):
    pass


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", ""),
        ("order_id", "x" * 257),
        ("order_id", None),
        ("order_id", 1234),
        ("order_id", Str("o-1")),
        ("order_id", "order-4111111111111111"),
        ("order_id", "4111 1111 1111 1111"),
        ("order_id", "１２３"),
        ("status", "1234567890123"),  # 13 digits: a card number could be this long
        ("status", "1234.5678.9012.3"),
        ("error_code", "E-1234 5678-9012 3"),
        ("method", "wallet\u00e9"),
        ("method", 'wal"let'),
        ("method", "wal\\let"),
        ("method", "wal\nlet"),
        ("amount_minor", -1),
        ("amount_minor", True),
        ("amount_minor", 1.0),
        ("amount_minor", Int.ONE),
        ("amount_minor", 10**12),
        ("amount_minor", 2**63),
        ("amount_minor", 2**70),
        ("currency", "cny"),
        ("currency", "CN"),
        ("error_category", "other"),
        ("outcome", "weird"),
        ("event", "bogus"),
        ("event", None),
        ("timestamp", None),
        ("timestamp", datetime(2026, 1, 1)),
        ("timestamp", datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))),
        ("timestamp", datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))),
        ("timestamp", Moment(2026, 1, 1, tzinfo=UTC)),
        ("timestamp", "2026-01-01T00:00:00Z"),
        ("trace_id", None),
        ("trace_id", ""),
        ("span_id", 7),
        ("region", "eu"),
        ("labels", {"tier": "gold"}),
        ("channel", None),  # payment_requested names its channel
        ("attempt_id", None),  # and its attempt
    ],
)
def test_what_it_cannot_write_as_it_is_is_left_to_the_python_paths(log: PaymentLogger, field: str, value: Any):
    assert same_value(log, {**COMMON, field: value}) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_minor", 0),
        ("amount_minor", 10**12 - 1),
        ("method", ""),  # free text may be empty; an id may not
        ("method", "\x7f ~"),
        ("order_id", "o" * 256),
        ("order_id", "ord-123456789012"),  # a 12-digit run: short of a card number
        ("error_category", "limit"),
        ("outcome", None),
        ("event_id", "evt-1"),
        ("event_id", None),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
        ("span_id", "b7ad6b7169203331"),
        ("status", None),
    ],
)
def test_plain_values_at_their_edges_are_written(log: PaymentLogger, field: str, value: Any):
    assert same_value(log, {**COMMON, field: value}) is not None


def test_a_call_in_a_trace_names_its_trace_and_span(log: PaymentLogger):
    call = {**COMMON, "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
    value = same_value(log, call)
    assert value is not None and value.endswith(
        b',"trace":{"id":"0af7651916cd43dd8448eb211c80319c"},"span":{"id":"b7ad6b7169203331"}}'
    )


def test_a_batch_answers_each_call_in_its_order_and_refuses_none(log: PaymentLogger):
    calls: list[Any] = [COMMON, {**COMMON, "region": "eu"}, "not a dict", UserDict(COMMON), {1: 2}, None, COMMON]
    lines = native_lines(log, calls)
    assert [line is not None for line in lines] == [True, False, False, False, False, False, True]
    ids = [msgspec.json.decode(line)["event"]["id"] for line in lines if line is not None]
    assert len(set(ids)) == 2 and all(SDK_ID.match(i) for i in ids)


@pytest.mark.parametrize("prefix", ["4111-1111-", "x" * 245, 'a"b-'])
def test_an_id_prefix_whose_ids_could_hold_a_digit_run_or_break_the_contract_is_not_used(
    log: PaymentLogger, prefix: str
):
    """The SDK draws its prefix so that no counter value makes a card-like run with it; the crate
    checks that, and the ids' length, rather than trust it."""
    service = log._logger.service_json
    assert _native.payment_lines([COMMON], service, UTC, prefix, MAX_EVENT_BYTES) == [None]
    assert _native.payment_lines([COMMON], service, UTC, "0123abcd-", MAX_EVENT_BYTES)[0] is not None


def test_an_event_over_the_size_limit_is_left_to_the_python_paths(log: PaymentLogger):
    [line] = native_lines(log, [COMMON])
    assert line is not None
    assert native_lines(log, [COMMON], max_bytes=len(line))[0] is not None
    assert native_lines(log, [COMMON], max_bytes=len(line) - 1) == [None]


@pytest.mark.parametrize(
    "service",
    [
        {"name": "gw", "instance": {"id": "host-4111111111111111"}},  # a digit run: the Python paths mask it
        {"name": "gw\u00e9", "instance": {"id": "h"}},
    ],
)
def test_a_service_section_it_cannot_vouch_for_leaves_every_call_to_the_python_paths(tmp_path: Path, service: dict):
    logger = open_logger(
        service["name"],
        config=Config(sdk=SdkSettings(spill_dir=tmp_path)),
        transport=lambda events: None,
        heartbeat=False,
        instance_id=service["instance"]["id"],
    )
    try:
        assert native_lines(logger, [COMMON]) == [None]
        assert payment_records(logger._logger, [dict(COMMON)]) == [None]  # the Python fast path's too
    finally:
        logger.close(timeout=2)


def test_payment_records_fills_what_native_leaves_from_the_python_fast_path(log: PaymentLogger):
    subclass = {**COMMON, "method": Str("wallet")}  # a framework's safe string: the Python fast path's
    records = payment_records(log._logger, [dict(COMMON), dict(subclass), {**COMMON, "region": "eu"}])
    assert records[0] is not None and records[0].value.startswith(b'{"@timestamp"')
    assert records[1] is not None and decode(records[1].value).payment.method == "wallet"  # type: ignore[union-attr]
    assert records[2] is None  # a label: the general path's
    with mock.patch.object(sdk, "native", None):
        python = payment_records(log._logger, [dict(COMMON)])
    assert re.sub(rb'"id":"[^"]+"', b"", python[0].value) == re.sub(rb'"id":"[^"]+"', b"", records[0].value)  # type: ignore[union-attr]
