"""The SDK's fast path for payment calls (`payment_records`) against its general path (the ECS
document, `to_contract_event`, `to_record`): for any call the fast path takes, the two give the
same record, byte for byte but for the event id the SDK draws; every call it does not take it
leaves untouched. Each test runs with the native fast path as built and with the Python fast path
alone. The calls are hypothesis-generated, valid and invalid, through the caller's real processor
chain."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from paywatch.app.config import Config
from paywatch.collectors import sdk
from paywatch.collectors.sdk import PaymentLogger, open_logger, payment_records
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.transports import Record
from paywatch.contract import PAYMENT_ACTIONS, decode
from paywatch.pan import may_contain_pan

SDK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PAN = "4111 1111 1111 1111"

ids = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["o-1", "", "x" * 257, "4111111111111111", PAN, "１２３"]),
    st.integers(-(10**20), 10**20),
    st.none(),
    st.booleans(),
)
texts = st.one_of(st.text(max_size=12), st.sampled_from([PAN, "wallet", "\\u0034", 'a"b\\c']), st.none(), st.integers())
amounts = st.one_of(
    st.integers(-5, 10**20),
    st.floats(allow_nan=True),
    st.sampled_from([38.0, 38.6, True]),
    st.text(max_size=4),
    st.none(),
)
timestamps = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
    st.datetimes(),
    st.just("2026-11-26T10:00:00Z"),
)
CALL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "order_id": ids,
    "attempt_id": ids,
    "merchant_id": ids,
    "channel": texts,
    "method": texts,
    "status": texts,
    "error_code": texts,
    "error_category": st.sampled_from(["user", "channel", "system", "limit", "other", None]),
    "amount_minor": amounts,
    "latency_ms": amounts,
    "currency": st.sampled_from(["CNY", "cny", "EURO", "EU", 978, None]),
    "outcome": st.sampled_from(["success", "failure", "unknown", "weird", None, 1]),
    "event_id": ids,
    "trace_id": st.one_of(st.just("0af7651916cd43dd8448eb211c80319c"), ids),
    "span_id": st.one_of(st.just("b7ad6b7169203331"), ids),
    "timestamp": timestamps,
    "region": st.just("eu"),  # not a contract field: a label
    "labels": st.just({"tier": "gold"}),
}
actions = st.one_of(st.sampled_from(sorted(PAYMENT_ACTIONS)), st.sampled_from(["bogus", None, 5, ["x"]]))


words = st.text(alphabet=string.ascii_letters + string.digits + "-_ ", min_size=1, max_size=20)
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "method": words,
    "merchant_id": words,
    "status": words,
    "amount_minor": st.integers(0, 10**12),
    "latency_ms": st.integers(0, 10**6),
    "currency": st.sampled_from(["CNY", "EUR"]),
    "outcome": st.sampled_from(["success", "failure", "unknown", None]),
    "event_id": st.one_of(st.none(), words),
    "trace_id": st.just("0af7651916cd43dd8448eb211c80319c"),
    "timestamp": st.datetimes(timezones=st.just(UTC)),
}


@st.composite
def payment_calls(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """Half the shape of real calls (a known action, an order id, well-typed fields, now and
    then one field from anywhere), half anything."""
    if draw(st.booleans()):
        names = draw(st.sets(st.sampled_from(sorted(CALL_FIELDS)), max_size=len(CALL_FIELDS)))
        return draw(actions), {name: draw(CALL_FIELDS[name]) for name in sorted(names)}
    names = draw(st.sets(st.sampled_from(sorted(VALID_FIELDS))))
    fields = {"order_id": draw(words), "attempt_id": draw(words), "channel": draw(words)}
    fields.update({name: draw(VALID_FIELDS[name]) for name in sorted(names)})
    if draw(st.integers(0, 3)) == 0:
        wild = draw(st.sampled_from(sorted(CALL_FIELDS)))
        fields[wild] = draw(CALL_FIELDS[wild])
    return draw(st.sampled_from(sorted(PAYMENT_ACTIONS))), fields


@pytest.fixture(autouse=True, params=["native", "python"])
def fast_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """`payment_records` as built (the native fast path first, the Python one for what it leaves),
    and with the Python fast path alone, as where the extension was not built."""
    if request.param == "native" and sdk.native is None:
        pytest.fail("paywatch._native is not built: install cargo and reinstall (see native/)")
    with mock.patch.object(sdk, "native", sdk.native if request.param == "native" else None):
        yield request.param


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaymentLogger]:
    spool: Path = tmp_path_factory.mktemp("spool")
    logger = open_logger(
        "payment-gateway",
        config=Config(sdk=SdkSettings(spill_dir=spool)),
        transport=lambda events: None,
        heartbeat=False,
    )
    yield logger
    logger.close(timeout=2)


def both_paths(log: PaymentLogger, action: Any, fields: dict[str, Any]) -> tuple[Record | None, list[Record], dict]:
    """(the fast path's record or None, the general path's records, the call as the caller's
    chain handed it over); each path gets its own copy of the call."""
    emitter = log._logger
    _method, call = log._process_event("payment", action, dict(fields))[0][0]
    fast_call = dict(call)
    [fast] = payment_records(emitter, [fast_call])
    assert fast_call.keys() == call.keys() and all(fast_call[k] is call[k] for k in call), "fast path changed the call"
    general: list[Record] = []
    emitter._record_document("payment", dict(call), general)
    return fast, general, call


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payment_calls())
@example(("payment_requested", {"order_id": "o-1", "attempt_id": "a-1", "channel": "alipay", "amount_minor": 1250}))
def test_a_call_the_fast_path_takes_gives_the_general_paths_bytes(log: PaymentLogger, call: tuple[Any, dict]):
    action, fields = call
    fast, general, handed = both_paths(log, action, fields)
    event("fast path" if fast is not None else "general path only")
    if fast is None:
        return
    assert len(general) == 1, "the fast path took a call the general path finds invalid"
    assert (fast.topic, fast.key) == (general[0].topic, general[0].key)
    ours, theirs = msgspec.json.decode(fast.value), msgspec.json.decode(general[0].value)
    if handed.get("event_id") is None:  # each path drew its own id
        assert SDK_ID.match(ours["event"].pop("id")) and SDK_ID.match(theirs["event"].pop("id"))
    assert ours == theirs
    assert decode(fast.value).event.id  # the collector's decoder takes it
    assert not may_contain_pan(fast.value)


# The common payment call's keywords (bench/sdk.py makes this one).
COMMON_FIELDS = {
    "order_id": "order-7",
    "attempt_id": "attempt-21",
    "channel": "alipay",
    "method": "wallet",
    "merchant_id": "m-42",
    "amount_minor": 1250,
    "currency": "CNY",
    "outcome": "unknown",
    "latency_ms": 38,
}


def test_the_common_payment_call_takes_the_fast_path_and_the_collector_accepts_it(log: PaymentLogger):
    fast, general, _ = both_paths(log, "payment_requested", COMMON_FIELDS)
    assert fast is not None
    event = decode(fast.value)
    assert event.payment is not None and event.payment.amount_minor == 1250 and event.key == "order-7"
    assert SDK_ID.match(event.event.id) and event.timestamp.microsecond % 1000 == 0
    assert event.service.name == "payment-gateway"
    assert msgspec.json.decode(fast.value)["payment"] == msgspec.json.decode(general[0].value)["payment"]


@pytest.mark.parametrize(
    "fields",
    [
        {"order_id": 1234, "attempt_id": "a", "channel": "alipay"},  # a numeric id the general path makes a string
        {"order_id": "o", "attempt_id": "a", "channel": "alipay", "currency": "cny"},  # upper-cased there
        {"order_id": "o", "attempt_id": "a", "channel": "alipay", "latency_ms": 38.4},  # rounded there
        {"order_id": "o", "attempt_id": "a", "channel": "alipay", "region": "eu"},  # a label
        {"order_id": "o", "attempt_id": "a", "channel": "alipay", "status": PAN},  # masked there
        {"order_id": "o", "channel": "alipay"},  # invalid: payment_requested names its attempt
        {"order_id": "o", "attempt_id": "a", "channel": "alipay", "timestamp": datetime(2026, 1, 1)},  # naive
    ],
)
def test_calls_the_general_path_must_change_report_or_mask_are_left_to_it(log: PaymentLogger, fields: dict):
    fast, _general, _ = both_paths(log, "payment_requested", fields)
    assert fast is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(payment_calls(), min_size=1, max_size=12))
def test_a_batch_gives_each_call_what_it_gets_alone(log: PaymentLogger, calls: list[tuple[Any, dict]]):
    """`payment_records` on a batch (one conversion, one encoding, one scan for all, falling back
    call by call when one is invalid) gives each call the record it gets alone, or None alike,
    and changes no call."""
    emitter = log._logger
    handed = [log._process_event("payment", action, dict(fields))[0][0][1] for action, fields in calls]
    batch = [dict(call) for call in handed]
    together = payment_records(emitter, batch)
    assert all(b.keys() == h.keys() and all(b[k] is h[k] for k in h) for b, h in zip(batch, handed, strict=True))
    alone = [payment_records(emitter, [dict(call)])[0] for call in handed]
    event("all taken" if None not in together else "some left to the general path")
    for call, ours, theirs in zip(handed, together, alone, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is None or theirs is None:
            continue
        assert (ours.topic, ours.key) == (theirs.topic, theirs.key)
        a, b = msgspec.json.decode(ours.value), msgspec.json.decode(theirs.value)
        if call.get("event_id") is None:  # each drew its own id
            assert SDK_ID.match(a["event"].pop("id")) and SDK_ID.match(b["event"].pop("id"))
        assert a == b
