"""The emitter SDK: what a call becomes, and that it never blocks or raises whatever happens
behind it (garbage input, a receiver that is down, hangs, refuses or raises, a full disk)."""

from __future__ import annotations

import enum
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polling
import pytest
from opentelemetry.sdk.trace import TracerProvider

from paywatch.app.config import Config
from paywatch.clock import ManualClock
from paywatch.collectors import sdk
from paywatch.collectors.sdk import PaymentLogger, open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.transports import KeepWaiting, Outcome, Record
from paywatch.contract import Event, decode

PAN = "4111 1111 1111 1111"
PAN_DIGITS = "4111111111111111"
T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


class FakeReceiver:
    """A receiver the test takes down and brings back; keeps what it acknowledged, in order."""

    name = "fake"

    def __init__(self) -> None:
        self.up = True
        self.received: list[Record] = []
        self.sends = 0

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
        self.sends += 1
        if not self.up:
            return Outcome.all_retry(len(records), "receiver down")
        self.received.extend(records)
        return Outcome()

    def close(self) -> None:
        pass

    def events(self) -> list[Event]:
        return [decode(r.value) for r in self.received]

    def ids(self) -> list[str]:
        return [e.event.id for e in self.events() if e.event.dataset == "paywatch.payment"]


def config(tmp_path: Path, **sdk: object) -> Config:
    fast = {"retry_interval_s": 0.01, "retry_max_interval_s": 0.05, "spill_dir": tmp_path / "spool"}
    return Config(sdk=SdkSettings(**{**fast, **sdk}))


def emit_latencies_us(emit: Callable[[int], None], n: int, min_measured: float = 0.8) -> list[float]:
    """Wall time of each call, leaving out calls during which the OS preempted this thread
    (an involuntary context switch: the machine was busy, the SDK did not wait). Waiting on a
    lock, the GIL or I/O is a voluntary switch, so any wait the SDK causes stays measured."""
    kept = []
    for i in range(n):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        t = time.perf_counter_ns()
        emit(i)
        took = time.perf_counter_ns() - t
        if resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw == before:
            kept.append(took / 1e3)
    assert len(kept) >= n * min_measured, "the machine preempted too many calls to measure anything"
    return kept


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def wait_for(condition: Callable[[], bool]) -> None:
    """The SDK's counters move within milliseconds: poll them often."""
    polling.wait_for(condition, 20.0, "the SDK's counters", every=0.005)


def order(log: PaymentLogger, i: int, **extra: object) -> None:
    log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}", amount_minor=100 + i, currency="EUR", **extra)


@pytest.fixture
def receiver() -> FakeReceiver:
    return FakeReceiver()


@pytest.fixture
def make_logger(tmp_path: Path):
    opened: list[PaymentLogger] = []

    def make(transport: object, **kw: object) -> PaymentLogger:
        sdk = kw.pop("sdk", {})
        kw.setdefault("heartbeat", False)
        log = open_logger("payment-gateway", config=config(tmp_path, **sdk), transport=transport, **kw)  # type: ignore[arg-type]
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close(timeout=2)


# ---------------------------------------------------------------- what a call becomes


def test_payment_call_becomes_a_contract_event_routed_by_dataset_and_keyed_by_order(make_logger, receiver):
    clock = ManualClock(T0 + timedelta(microseconds=123_456))
    log = make_logger(receiver, clock=clock, version="2.4.1", instance_id="gw-1", region="eu")
    log.payment(
        "payment_requested",
        order_id=9007199254740993,  # numeric ids become the strings the contract wants
        attempt_id="a-1",
        channel="alipay",
        method="wallet",
        amount_minor=1250,
        currency="cny",
        outcome="unknown",
        latency_ms=12.6,
        cashier="web",
    )
    clock.advance(90)
    log.warning("callback queue slow", queue_depth=1200)
    assert log.flush(5)

    pay, warn = receiver.received
    assert pay.topic == "payments.events" and pay.key == "9007199254740993"
    assert warn.topic == "paywatch.logs" and warn.key == "payment-gateway"
    e = decode(pay.value)
    assert e.timestamp == T0 + timedelta(microseconds=123_000)  # event time from the clock, ms
    assert e.event.dataset == "paywatch.payment" and e.event.action == "payment_requested"
    assert e.event.outcome == "unknown"
    assert len(e.event.id) == 36  # a uuid
    assert (e.service.name, e.service.instance.id, e.service.version) == ("payment-gateway", "gw-1", "2.4.1")
    p = e.payment
    assert p is not None
    assert (p.order_id, p.attempt_id, p.channel, p.method) == ("9007199254740993", "a-1", "alipay", "wallet")
    assert (p.amount_minor, p.currency, p.latency_ms) == (1250, "CNY", 13)
    assert e.labels == {"region": "eu", "cashier": "web"}
    w = decode(warn.value)
    assert w.timestamp == T0 + timedelta(seconds=90, microseconds=123_000)
    assert w.log is not None and w.log.level == "warning"
    assert w.message == "callback queue slow" and w.labels["queue_depth"] == "1200"


def test_values_of_str_and_int_subclasses_are_sent_as_their_plain_values(make_logger, receiver):
    """A framework's safe-string type or an IntEnum is what a caller has at hand; msgspec cannot
    encode a str subclass, which once dropped the event as an internal error."""

    class SafeString(str):
        pass

    class Cents(enum.IntEnum):
        PRICE = 1250

    class Shown(str):
        """Says something else than what it holds: what it holds was judged, so that is sent."""

        def __str__(self) -> str:
            return PAN

    log = make_logger(receiver)
    log.payment("order_created", order_id=SafeString("o-1"), method=Shown("wallet"), amount_minor=Cents.PRICE)
    log.info(SafeString("a safe message"), order_id="o-1")
    assert log.flush(5)
    pay, info = (decode(r.value) for r in receiver.received)
    assert pay.payment is not None and (pay.payment.order_id, pay.payment.method) == ("o-1", "wallet")
    assert pay.payment.amount_minor == 1250 and info.message == "a safe message"
    assert log.stats()["errors"] == 0 and log.stats()["dropped"] == 0
    assert all(PAN not in r.value.decode() for r in receiver.received)


def test_a_service_named_by_a_str_subclass_opens_and_sends(tmp_path, receiver):
    class SafeString(str):
        pass

    log = open_logger(SafeString("payment-gateway"), config=config(tmp_path), transport=receiver, heartbeat=False)
    try:
        log.payment("order_created", order_id="o-1")
        assert log.flush(5)
        assert decode(receiver.received[0].value).service.name == "payment-gateway"
    finally:
        log.close(timeout=2)


def test_a_forked_child_draws_event_ids_of_its_own():
    """Workers forked from one preloaded app inherit the id counters; the collector stores only
    the first event of an id, so a child that repeated its parent's ids would lose events."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, then out without running the parent's cleanup
        os.write(write, f"{sdk.new_event_id()} {sdk._NATIVE_ID_PREFIX}".encode())
        os._exit(0)
    os.close(write)
    child_id, child_native = os.read(read, 200).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    mine = sdk.new_event_id()
    assert child_id[:24] != mine[:24] and child_native != sdk._NATIVE_ID_PREFIX
    assert child_native != child_id[:24]


def test_caller_event_id_and_timestamp_are_kept(make_logger, receiver):
    log = make_logger(receiver)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    log.payment("order_paid", order_id="o1", event_id="evt-fixed", timestamp=at)
    assert log.flush(5)
    e = receiver.events()[0]
    assert (e.event.id, e.timestamp) == ("evt-fixed", at)


def test_exception_becomes_ecs_error_and_app_log_about_an_order_names_it(make_logger, receiver):
    log = make_logger(receiver)
    try:
        raise TimeoutError("bank_b did not answer in 3000 ms")
    except TimeoutError:
        log.exception("channel query failed", order_id="o7", channel="bank_b")
    log.error("ledger mismatch %s != %s", 100, 90)
    log.debug("not sent below the configured level")
    assert log.flush(5)
    first, second = receiver.events()
    assert first.event.dataset == "paywatch.app" and first.log is not None and first.log.level == "error"
    assert first.error is not None
    assert (first.error.type, first.error.message) == ("TimeoutError", "bank_b did not answer in 3000 ms")
    assert first.payment is not None and (first.payment.order_id, first.payment.channel) == ("o7", "bank_b")
    assert second.message == "ledger mismatch 100 != 90" and second.payment is None
    assert log.stats()["emitted"] == 2


def test_bound_context_goes_with_every_event(make_logger, receiver):
    log = make_logger(receiver).bind(merchant_id="m-42", region="eu")
    log.payment("order_created", order_id="o1")
    assert log.flush(5)
    e = receiver.events()[0]
    assert e.payment is not None and e.payment.merchant_id == "m-42"
    assert e.labels == {"region": "eu"}


def test_active_opentelemetry_span_fills_trace_and_span_ids(make_logger, receiver):
    log = make_logger(receiver)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("charge") as span:
        log.payment("order_created", order_id="o1")
        ctx = span.get_span_context()
    log.payment("order_created", order_id="o2")
    assert log.flush(5)
    inside, outside = receiver.events()
    assert inside.trace is not None and inside.trace.id == format(ctx.trace_id, "032x")
    assert inside.span is not None and inside.span.id == format(ctx.span_id, "016x")
    assert outside.trace is None and outside.span is None


def test_card_numbers_are_masked_before_they_are_buffered_or_spilled(make_logger, receiver, tmp_path):
    receiver.up = False
    log = make_logger(receiver)
    log.payment(
        "channel_callback",
        order_id="o1",
        attempt_id="a1",
        channel="bank_b",
        status=f"declined card {PAN}",
        message=f"raw callback pan={PAN_DIGITS}",
        card=PAN,
    )
    log.error(f"could not charge {PAN_DIGITS}")
    wait_for(lambda: log.stats()["spilled"] == 2)
    spilled = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*.ndjson"))
    assert b"411111******1111" in spilled
    assert PAN_DIGITS.encode() not in spilled and PAN.encode() not in spilled
    receiver.up = True
    assert log.flush(10)
    sent = b"".join(r.value for r in receiver.received)
    assert len(receiver.received) == 2 and PAN_DIGITS.encode() not in sent and PAN.encode() not in sent


# ---------------------------------------------------------------- never raises


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")

    __repr__ = __str__


GARBAGE: list[Callable[[PaymentLogger], None]] = [
    lambda log: log.payment("not_an_action", order_id="o"),
    lambda log: log.payment("payment_requested", order_id="o"),  # no attempt_id / channel
    lambda log: log.payment("order_created", order_id=None),
    lambda log: log.payment("order_created", order_id=""),
    lambda log: log.payment("order_created", order_id="o" * 300),
    lambda log: log.payment("order_created", order_id="o", amount_minor=12.5),
    lambda log: log.payment("order_created", order_id="o", amount_minor="1250"),
    lambda log: log.payment("order_created", order_id="o", amount_minor=-1),
    lambda log: log.payment("order_created", order_id="o", currency="euro"),
    lambda log: log.payment("order_created", order_id="o", outcome="maybe"),
    lambda log: log.payment("order_created", order_id="o", error_category="cosmic"),
    lambda log: log.payment("order_created", order_id="o", timestamp=datetime(2026, 1, 1)),  # naive
    lambda log: log.payment("order_created", order_id="o", timestamp="yesterday"),
    lambda log: log.payment("order_created", order_id=Unprintable()),
    lambda log: log.payment("order_created", order_id="o", message="x" * 100_000),  # over 64 KiB
    lambda log: log.payment("order_created", order_id="o", heartbeat="no"),
    lambda log: log.payment(None, order_id="o"),
    lambda log: log.payment(),
    lambda log: log.payment(b"order_created", order_id=b"o"),
]

# Accepted, with what cannot be represented turned into text.
FIXABLE: list[Callable[[PaymentLogger], None]] = [
    lambda log: log.info(),
    lambda log: log.info(Unprintable()),
    lambda log: log.info("%d orders", "not a number"),
    lambda log: log.info("odd values", blob=b"\x00\xff", obj=Unprintable(), nested={"a": [1, {2}]}),
    lambda log: log.info("odd labels", labels={1: 2, "k": None}),
    lambda log: log.info("labels not a dict", labels="eu"),
    lambda log: log.payment("order_created", "extra positional", order_id="o"),
]


def test_garbage_input_never_raises_is_counted_and_reported_with_its_reason(make_logger, receiver, caplog):
    log = make_logger(receiver)
    for call in GARBAGE + FIXABLE:
        call(log)  # must not raise
    assert log.flush(5)
    stats = log.stats()
    assert stats["dropped_invalid"] == len(GARBAGE)
    assert stats["errors"] == 0
    events = receiver.events()
    reports = [e for e in events if e.message and e.message.startswith("paywatch sdk dropped an invalid")]
    assert len(reports) == len(GARBAGE)
    reasons = " | ".join(e.error.message for e in reports if e.error and e.error.message)
    assert "not_an_action" in reasons and "payment.channel is required for payment_requested" in reasons
    assert "Expected `int | null`, got `float` - at `$.payment.amount_minor`" in reasons
    assert "over the 65536-byte limit" in reasons
    assert all("sdk_rejected_event" in e.labels for e in reports)
    oversize = next(e for e in reports if e.error and "over the 65536-byte limit" in (e.error.message or ""))
    assert oversize.labels["sdk_rejected_event"].startswith('{"@timestamp":')
    assert len(events) - len(reports) == len(FIXABLE)
    fixed = {e.message: e for e in events if e not in reports}
    assert fixed["odd values"].labels["obj"] == "<unprintable Unprintable>"
    assert fixed["odd labels"].labels == {"1": "2", "k": "None"}
    assert fixed["labels not a dict"].labels == {"labels": "eu"}
    assert "%d orders not a number" in fixed
    log.close(timeout=2)
    assert any("dropped_invalid" in r.getMessage() for r in caplog.records)


def test_a_transport_that_raises_counts_an_error_and_loses_nothing(make_logger, receiver):
    class Raising(FakeReceiver):
        broken = True

        def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
            if self.broken:
                raise RuntimeError("bug in transport")
            return super().send(records, keep_waiting)

    transport = Raising()
    log = make_logger(transport)
    for i in range(10):
        order(log, i)
    wait_for(lambda: log.stats()["spilled"] == 10)
    assert log.stats()["errors"] >= 1
    transport.broken = False
    assert log.flush(10)
    assert transport.ids() == [f"e{i}" for i in range(10)]


def test_events_refused_by_the_receiver_are_counted_and_logged_not_retried(make_logger, caplog):
    class Refusing(FakeReceiver):
        def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
            self.sends += 1
            return Outcome(rejected=[(i, "line 1: schema says no") for i in range(len(records))])

    transport = Refusing()
    log = make_logger(transport)
    order(log, 1)
    wait_for(lambda: log.stats()["dropped_rejected"] == 1)
    log.close(timeout=2)
    assert transport.sends == 1 and log.stats()["spilled"] == 0
    assert any("schema says no" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- never blocks


def test_emitting_never_waits_for_a_hung_transport(make_logger, caplog):
    """The drain thread is stuck inside send(); callers still return at once, the buffer
    bound drops (counted) rather than wait, and nothing is lost silently."""
    release = threading.Event()

    class Hung(FakeReceiver):
        def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
            release.wait(60)
            return super().send(records, keep_waiting)

    transport = Hung()
    log = make_logger(transport, sdk={"buffer_events": 1000, "batch_events": 100})
    n = 20_000
    latencies = emit_latencies_us(lambda i: order(log, i), n)
    stats = log.stats()
    assert stats["emitted"] + stats["dropped_buffer_full"] == n
    assert stats["dropped_buffer_full"] >= n - 1100
    print(f"emit with a hung transport: p50 {statistics.median(latencies):.1f} µs, p99 {p99(latencies):.1f} µs")
    assert p99(latencies) < 1000  # generous; bench/sdk.py reports the real figures
    release.set()
    assert log.flush(10)
    assert len(transport.received) == stats["emitted"]
    log.close(timeout=2)
    assert any("dropped_buffer_full" in r.getMessage() for r in caplog.records)


def test_emitting_never_waits_while_the_receiver_is_down(make_logger, receiver):
    receiver.up = False
    log = make_logger(receiver)
    latencies = emit_latencies_us(lambda i: order(log, i), 20_000)
    print(f"emit with the receiver down: p50 {statistics.median(latencies):.1f} µs, p99 {p99(latencies):.1f} µs")
    assert p99(latencies) < 1000
    wait_for(lambda: log.stats()["spilled"] == 20_000)
    assert log.stats()["dropped_buffer_full"] == 0


# ---------------------------------------------------------------- spill and replay


def test_outage_spills_then_replays_in_order_exactly_once_and_deletes_segments(make_logger, receiver, tmp_path):
    log = make_logger(receiver, sdk={"spill_segment_bytes": 16_384})
    for i in range(100):
        order(log, i)
    assert log.flush(5)
    receiver.up = False
    for i in range(100, 3100):
        order(log, i)
        if i == 1500:  # the drain thread has been failing and spilling for a while
            wait_for(lambda: log.stats()["spilled"] > 0)
    wait_for(lambda: log.stats()["spilled"] == 3000)
    segments = list((tmp_path / "spool").rglob("*.ndjson"))
    assert len(segments) > 3  # bounded segments, not one growing file
    assert log.stats()["transport_available"] is False
    receiver.up = True
    for i in range(3100, 3200):  # emitted while the replay runs: still after the spilled ones
        order(log, i)
    assert log.flush(20)
    assert receiver.ids() == [f"e{i}" for i in range(3200)]
    stats = log.stats()
    assert stats["sent"] + stats["replayed"] == 3200 and stats["spilled"] == stats["replayed"] >= 3000
    assert stats["spill_bytes"] == 0 and not list((tmp_path / "spool").rglob("*.ndjson"))


def test_while_a_send_goes_unanswered_newer_events_wait_on_disk_and_follow_it(make_logger, tmp_path):
    """Like Kafka through a broker restart: the transport keeps the batch it was given until
    it is acknowledged (no take-back, so no duplicate). Meanwhile, past send_timeout_s,
    the SDK moves newer events to disk; they are sent after the batch, in order."""
    answer = threading.Event()

    class Slow(FakeReceiver):
        holding = 0

        def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
            self.holding = len(records)
            started = time.monotonic()
            while not answer.is_set() and keep_waiting(time.monotonic() - started):
                time.sleep(0.01)
            return super().send(records, keep_waiting)

    transport = Slow()
    log = make_logger(transport, sdk={"send_timeout_s": 0.2, "batch_events": 50})
    for i in range(50):
        order(log, i)  # the batch the transport holds
    wait_for(lambda: transport.holding > 0)
    for i in range(50, 550):
        order(log, i)
    held = transport.holding
    wait_for(lambda: log.stats()["spilled"] == 550 - held)
    assert log.stats()["transport_available"] is False and transport.received == []
    answer.set()
    assert log.flush(10)
    assert transport.ids() == [f"e{i}" for i in range(550)]
    stats = log.stats()
    assert (stats["sent"], stats["replayed"], stats["transport_available"]) == (held, 550 - held, True)


def test_records_acknowledged_in_a_partly_failed_batch_are_not_sent_again(make_logger):
    class HalfDown(FakeReceiver):
        """Acknowledges only the even records of each batch while `half` is set."""

        half = True

        def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
            if not self.half:
                return super().send(records, keep_waiting)
            self.sends += 1
            self.received.extend(records[::2])
            return Outcome(retry=list(range(1, len(records), 2)), reason="one partition down")

    transport = HalfDown()
    log = make_logger(transport, sdk={"batch_events": 64})
    for i in range(1000):
        order(log, i)
    wait_for(lambda: transport.sends > 20)
    transport.half = False
    assert log.flush(20)
    ids = transport.ids()
    assert sorted(ids) == sorted(f"e{i}" for i in range(1000)) and len(ids) == len(set(ids))


def test_full_disk_bound_drops_with_a_counter_and_a_log_line(make_logger, receiver, caplog):
    receiver.up = False
    log = make_logger(receiver, sdk={"spill_max_bytes": 40_000})
    for i in range(500):
        order(log, i)
    wait_for(lambda: (s := log.stats())["spilled"] + s["dropped_spill_full"] == 500)
    stats = log.stats()
    assert 0 < stats["spilled"] < 500 and stats["spill_bytes"] <= 40_000
    assert stats["dropped"] == stats["dropped_spill_full"] == 500 - stats["spilled"]
    wait_for(lambda: any("dropped_spill_full" in r.getMessage() for r in caplog.records))
    line = next(r.getMessage() for r in caplog.records if "dropped_spill_full" in r.getMessage())
    assert "40000-byte bound" in line
    receiver.up = True
    assert log.flush(10)
    assert receiver.ids() == [f"e{i}" for i in range(stats["spilled"])]  # the oldest are kept


def test_spill_disabled_means_undeliverable_events_are_dropped_and_counted(make_logger, receiver):
    receiver.up = False
    log = make_logger(receiver, sdk={"spill_max_bytes": 0})
    for i in range(10):
        order(log, i)
    wait_for(lambda: log.stats()["dropped_spill_full"] == 10)


def test_what_is_spilled_at_close_is_replayed_by_the_next_process(tmp_path, receiver):
    receiver.up = False
    first = open_logger("payment-gateway", config=config(tmp_path), transport=receiver, heartbeat=False)
    for i in range(50):
        order(first, i)
    started = time.monotonic()
    first.close(timeout=1)
    assert time.monotonic() - started < 5
    assert first.stats()["spilled"] == 50
    order(first, 999)  # after close: counted, not lost silently
    assert first.stats()["dropped_closed"] == 1

    after = FakeReceiver()
    second = open_logger("payment-gateway", config=config(tmp_path), transport=after, heartbeat=False)
    assert second.flush(10)
    second.close(timeout=2)
    assert after.ids() == [f"e{i}" for i in range(50)]
    assert not list((tmp_path / "spool").rglob("*.ndjson"))


def test_close_delivers_what_is_buffered(make_logger, receiver):
    log = make_logger(receiver)
    for i in range(2000):
        order(log, i)
    log.close(timeout=5)
    assert len(receiver.ids()) == 2000 and log.stats()["spilled"] == 0


def test_in_process_callable_receives_events(make_logger):
    got: list[Event] = []
    log = make_logger(got.extend)
    order(log, 1)
    assert log.flush(5)
    assert [e.event.id for e in got] == ["e1"] and log.stats()["transport"] == "callable"


# ---------------------------------------------------------------- heartbeats


def heartbeats(receiver: FakeReceiver) -> list[Event]:
    return [e for e in receiver.events() if e.event.dataset == "paywatch.heartbeat"]


def test_heartbeat_seq_checks_and_simulated_time(make_logger, receiver):
    clock = ManualClock(T0)
    state = {"db": True, "kafka": True}
    log = make_logger(receiver, clock=clock, checks=lambda: state, sdk={"heartbeat_interval_s": 15})
    assert log.heartbeat is not None
    log.heartbeat.beat()
    clock.advance(15)
    state["kafka"] = False
    log.heartbeat.beat()
    clock.advance(15)
    log.heartbeat.beat(status="degraded")
    assert log.flush(5)
    beats = heartbeats(receiver)
    assert [b.heartbeat.seq for b in beats if b.heartbeat] == [1, 2, 3]
    assert [b.heartbeat.status for b in beats if b.heartbeat] == ["up", "degraded", "degraded"]
    assert beats[1].heartbeat is not None and beats[1].heartbeat.checks == {"db": "ok", "kafka": "fail"}
    assert [b.timestamp for b in beats] == [T0, T0 + timedelta(seconds=15), T0 + timedelta(seconds=30)]
    assert all(b.heartbeat and b.heartbeat.interval_s == 15 for b in beats)
    assert receiver.received[0].topic == "paywatch.heartbeats" and receiver.received[0].key == "payment-gateway"


def test_failing_checks_callable_marks_the_service_degraded(make_logger, receiver):
    def checks() -> dict[str, bool]:
        raise ConnectionError("db unreachable")

    log = make_logger(receiver, checks=checks)
    log.heartbeat.beat()
    assert log.flush(5)
    (beat,) = heartbeats(receiver)
    assert beat.heartbeat is not None and beat.heartbeat.status == "degraded"
    assert beat.heartbeat.checks == {"checks": "fail"}


def test_heartbeat_thread_beats_every_interval_and_ends_with_stopping(tmp_path, receiver):
    log = open_logger("compensation-job", config=config(tmp_path, heartbeat_interval_s=0.05), transport=receiver)
    wait_for(lambda: len(heartbeats(receiver)) >= 3)
    log.close(timeout=5)
    beats = [b.heartbeat for b in heartbeats(receiver)]
    seqs = [b.seq for b in beats if b]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [b.status for b in beats if b][-1] == "stopping"
    assert all(b.status == "up" for b in beats[:-1] if b)


def test_atexit_sends_the_stopping_beat_and_delivers_the_buffer(tmp_path):
    out = tmp_path / "events.ndjson"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from paywatch.collectors.sdk import open_logger
        from paywatch.collectors.sdk_settings import SdkSettings
        from paywatch.app.config import Config
        from paywatch.contract import encode

        out = open({str(out)!r}, "ab")
        def deliver(events):
            out.write(b"".join(encode(e) + b"\\n" for e in events)); out.flush()

        cfg = Config(sdk=SdkSettings(spill_dir=Path({str(tmp_path / "spool")!r}), heartbeat_interval_s=60))
        log = open_logger("order-service", config=cfg, transport=deliver)
        for i in range(500):
            log.payment("order_created", order_id=f"o{{i}}")
        # no close(): the interpreter exits and the atexit hook must do it
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    from paywatch.contract import decode as dec

    events = [dec(line) for line in out.read_bytes().splitlines()]
    assert sum(e.event.dataset == "paywatch.payment" for e in events) == 500
    beats = [e.heartbeat for e in events if e.heartbeat]
    assert [b.status for b in beats] == ["up", "stopping"] and [b.seq for b in beats] == [1, 2]


def test_problems_are_logged_once_per_interval_with_counts(make_logger, receiver, caplog):
    caplog.set_level(logging.WARNING, logger="paywatch.sdk")
    log = make_logger(receiver, sdk={"problem_log_interval_s": 3600})
    for _ in range(5):
        log.payment("bogus", order_id="o")
    log.flush(5)
    log.close(timeout=2)
    lines = [r.getMessage() for r in caplog.records if "dropped_invalid" in r.getMessage()]
    # the first loss is said at once, the rest in the summary at close, never one line per event
    assert 1 <= len(lines) <= 2
    assert sum(int(re.search(r": (\d+) events", line)[1]) for line in lines) == 5


def test_counters_are_opentelemetry_metrics_when_the_service_has_a_meter_provider(tmp_path):
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        from paywatch.collectors.sdk import open_logger
        from paywatch.collectors.sdk_settings import SdkSettings
        from paywatch.app.config import Config

        cfg = Config(sdk=SdkSettings(spill_dir=Path({str(tmp_path / "spool")!r})))
        log = open_logger("order-service", config=cfg, transport=lambda events: None, heartbeat=False)
        for i in range(3):
            log.payment("order_created", order_id=f"o{{i}}")
        log.payment("bogus", order_id="o")
        assert log.flush(10)
        seen = {{}}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, point.attributes.get("state"), point.attributes["service.name"])
                        seen[key] = point.value
        print(seen[("paywatch.sdk.events", "sent", "order-service")],
              seen[("paywatch.sdk.events", "dropped_invalid", "order-service")],
              seen[("paywatch.sdk.buffer.fill", None, "order-service")])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, timeout=60, capture_output=True, text=True)
    assert out.stdout.split() == ["4", "1", "0.0"]  # 3 orders + the report of the invalid one
