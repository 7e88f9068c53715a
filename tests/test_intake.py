"""ECS JSON log lines in, contract events out (paywatch/intake.py), fuzzed with hypothesis.

Lines come from independent producers where one exists: Elastic's own Python ECS formatter
(`ecs-logging`) and Log4j 2's `EcsLayout` (the real Java service, tests/test_java_example.py,
and its lines kept in the corpus). tests/corpus/intake.ndjson is the fuzz corpus: every line a
producer wrote or hypothesis once broke us with, with the outcome it must keep having; add the
minimal example hypothesis prints whenever it finds a new failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ecs_logging
import httpx
import msgspec
import pytest
from event_strategies import contract_events, words
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from paywatch import contract
from paywatch.app.config import Config
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.collectors.collector import build_batch, routes
from paywatch.contract import ContractError, Event
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.finding import encode_finding
from paywatch.intake import READ, Intake, IntakeSettings
from paywatch.settings import Topics
from paywatch.simulator.scenarios import simulate

CORPUS = Path(__file__).parent / "corpus" / "intake.ndjson"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

# What Log4j 2's JsonTemplateLayout with the built-in EcsLayout.json writes for
# `LogManager.getLogger("paywatch.payments").info("callback")` inside a ThreadContext holding the
# payment fields: flattened, every ThreadContext value a string.
LOG4J_CALLBACK = {
    "@timestamp": "2026-11-26T11:59:58.125Z",
    "ecs.version": "1.2.0",
    "log.level": "INFO",
    "message": "callback from alipay",
    "process.thread.name": "main",
    "log.logger": "paywatch.payments",
    "event.action": "channel_callback",
    "event.outcome": "success",
    "payment.order_id": "ORD-42",
    "payment.attempt_id": "ATT-42-1",
    "payment.channel": "alipay",
    "payment.amount_minor": "1250",
    "payment.currency": "CNY",
    "event.dataset": "paywatch.payment",
    "service.name": "payment-gateway",
    "service.instance.id": "gw-1",
}


def line(tree: dict[str, Any]) -> bytes:
    return json.dumps(tree).encode()


def test_an_ecs_layout_line_is_read_and_the_rest_dropped():
    event = Intake().decode(line(LOG4J_CALLBACK))
    assert msgspec.to_builtins(event) == {
        "@timestamp": "2026-11-26T11:59:58.125000Z",
        "event": {
            "id": event.event.id,
            "dataset": "paywatch.payment",
            "action": "channel_callback",
            "outcome": "success",
        },
        "service": {"name": "payment-gateway", "instance": {"id": "gw-1"}},
        "payment": {
            "order_id": "ORD-42",
            "attempt_id": "ATT-42-1",
            "channel": "alipay",
            "amount_minor": 1250,
            "currency": "CNY",
        },
        "log": {"level": "info"},
        "message": "callback from alipay",
    }
    # no event.id in a log line: derived from the line, so a redelivery is stored once
    assert len(event.event.id) == 32
    assert Intake().decode(line(LOG4J_CALLBACK)).event.id == event.event.id
    other = Intake().decode(line({**LOG4J_CALLBACK, "@timestamp": "2026-11-26T11:59:58.126Z"}))
    assert other.event.id != event.event.id


def test_nested_dotted_and_mixed_forms_are_the_same_event():
    nested = {
        "@timestamp": "2026-11-26T11:59:58.125Z",
        "event": {"id": "e1", "dataset": "paywatch.heartbeat"},
        "service": {"name": "comp", "instance": {"id": "c-1"}},
        "heartbeat": {"interval_s": 10, "seq": 3, "status": "up", "checks": {"db": "ok"}},
    }
    dotted = {
        "@timestamp": "2026-11-26T11:59:58.125Z",
        "event.id": "e1",
        "event.dataset": "paywatch.heartbeat",
        "service.name": "comp",
        "service.instance.id": "c-1",
        "heartbeat.interval_s": "10",
        "heartbeat.seq": "3",
        "heartbeat.status": "up",
        "heartbeat.checks.db": "ok",
    }
    mixed = {**dotted, "service": {"name": "comp"}, "heartbeat": {"seq": 3}}
    del mixed["service.name"], mixed["heartbeat.seq"]
    want = contract.decode(line(nested))
    assert Intake().decode(line(dotted)) == want
    assert Intake().decode(line(mixed)) == want


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"payment.amount_minor": "12.50"}, "$.payment.amount_minor"),
        ({"payment.amount_minor": 12.5}, "$.payment.amount_minor"),
        ({"payment.currency": "yuan"}, "$.payment.currency"),
        ({"payment.ordr_id": "x"}, "unknown field payment.ordr_id"),
        ({"event.action": "teleported"}, "event.action 'teleported' is not one of"),
        ({"event.outcome": "maybe"}, "$.event.outcome"),
        ({"event.dataset": "paywatch.refunds"}, "$.event.dataset"),
        ({"@timestamp": "yesterday"}, "$.@timestamp"),
        ({"payment": {"order_id": "ORD-43"}}, "payment.order_id is given twice"),
        ({"payment.attempt_id": None}, "payment.attempt_id is required for channel_callback"),
        ({"service.instance.id": None}, "missing required field `instance`"),
        ({"labels": {"tags": ["a"]}}, "labels.tags must be a string"),
    ],
)
def test_a_broken_paywatch_field_is_an_error_with_the_reason(change, reason):
    tree = {**LOG4J_CALLBACK, **change}
    with pytest.raises(ContractError) as exc:
        Intake().decode(line(tree))
    assert reason in str(exc.value)


def test_dataset_and_instance_follow_what_ecs_loggers_write():
    beat = {
        "@timestamp": "2026-11-26T11:59:58Z",
        "event.dataset": "compensation-job.log",  # ecs-logging-java's default: <service>.log
        "service.name": "compensation-job",
        "service.node.name": "comp-7",  # ECS's name for the instance
        "heartbeat.interval_s": "5",
        "heartbeat.seq": "1",
        "heartbeat.status": "up",
        "log.level": "NOTICE",  # a custom level does not reject a heartbeat
        "message": "alive",
    }
    event = Intake().decode(line(beat))
    assert (event.event.dataset, event.service.instance.id, event.log) == ("paywatch.heartbeat", "comp-7", None)
    app = Intake().decode(line({**LOG4J_CALLBACK, "event.action": None, "event.dataset": None, "host.name": "h"}))
    assert app.event.dataset == "paywatch.app"
    with pytest.raises(ContractError, match=r"\$\.log\.level"):
        Intake().decode(line({**LOG4J_CALLBACK, "event.action": None, "event.dataset": None, "log.level": "LOUD"}))


def test_the_field_map_renames_a_teams_own_names():
    intake = Intake(
        IntakeSettings(field_map={"orderNo": "payment.order_id", "bizStatus": "payment.status", "reqId": "labels.req"})
    )
    tree = {**LOG4J_CALLBACK, "orderNo": "ORD-9", "bizStatus": "PAID", "reqId": 17}
    del tree["payment.order_id"]
    event = intake.decode(line(tree))
    assert (event.payment.order_id, event.payment.status, event.labels) == ("ORD-9", "PAID", {"req": "17"})
    with pytest.raises(ContractError, match=r"orderNo \(mapped to payment\.order_id\) and payment\.order_id disagree"):
        intake.decode(line({**LOG4J_CALLBACK, "orderNo": "ORD-9"}))
    # from the YAML config, and a target paywatch does not read is refused when the config loads
    config = Config.model_validate({"intake": {"field_map": {"orderNo": "payment.order_id"}}})
    assert Intake(config.intake).decode(line(tree)).payment.order_id == "ORD-9"
    with pytest.raises(ValidationError, match=r"payment\.order is not a field paywatch reads"):
        Config.model_validate({"intake": {"field_map": {"orderNo": "payment.order"}}})


def test_the_collector_stores_ecs_lines_and_dead_letters_broken_ones():
    from confluent_kafka import Message

    topics = Topics()
    table = routes(topics, "unit", 64 * 1024, Intake(IntakeSettings(field_map={"orderNo": "payment.order_id"})))
    good = {**LOG4J_CALLBACK, "orderNo": LOG4J_CALLBACK["payment.order_id"]}
    del good["payment.order_id"]
    broken = {**LOG4J_CALLBACK, "payment.amount_minor": "12.50"}
    messages = [
        Message(topic=topics.payments, partition=0, offset=i, value=line(t)) for i, t in enumerate([good, broken])
    ]
    batch = build_batch(messages, table, NOW, 64 * 1024)
    [(_, reason)] = [(m.offset(), r) for m, r in batch.dead]
    assert reason.startswith("paywatch.payment: ") and "$.payment.amount_minor" in reason
    [stored] = [json.loads(b.split(b"\n")[1]) for b in batch.lines]
    assert stored["payment"]["order_id"] == "ORD-42"
    assert stored["event"]["ingested"] == "2026-11-26T12:00:00Z"
    assert "ecs" not in stored and "process" not in stored


def test_the_embedded_ingest_takes_ecs_lines_over_http(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite")
    received: list[Event] = []
    server = IngestServer(received.extend, store, "tok", "127.0.0.1", 0, 1 << 20, Intake())
    server.start()
    try:
        body = line(LOG4J_CALLBACK) + b"\n" + line({**LOG4J_CALLBACK, "payment.ordr_id": "x"})
        r = httpx.post(f"{server.url}/v1/events", content=body, headers={"Authorization": "Bearer tok"})
    finally:
        server.stop()
    assert r.status_code == 422
    assert r.json()["rejected"] == [
        {
            "line": 2,
            "reason": "unknown field payment.ordr_id: payment.* and heartbeat.* take only the contract's fields",
        }
    ]
    assert [e.payment.order_id for e in received] == ["ORD-42"]
    [letter] = store.dead_letters()
    assert "payment.ordr_id" in letter["reason"]
    store.close()


# --- judged like SDK events: the same scenario through Elastic's own ECS formatter ---------------


class _EventTime(logging.Filter):
    """ecs-logging stamps @timestamp from the record's creation time: make that the event time."""

    def filter(self, record: logging.LogRecord) -> bool:
        ms = record.__dict__.pop("_at_ms")
        record.created, record.msecs = ms / 1000, ms % 1000
        return True


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A contract event's builtins with dotted keys (maps such as labels kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and prefix + key not in ("labels", "heartbeat.checks"):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def ecs_lines(events: list[Event]) -> list[bytes]:
    """Each event logged through the standard library logger with ecs-logging's formatter, as a
    Python service would: the payment fields as `extra`, its own logger, level and message."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(ecs_logging.StdlibFormatter())
    handler.addFilter(_EventTime())
    logger = logging.getLogger("payments.ecs")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    for event in events:
        fields = _dotted(msgspec.to_builtins(event))
        at = fields.pop("@timestamp")
        message = fields.pop("message", None) or fields.get("event.action", "heartbeat")
        level = getattr(logging, fields.pop("log.level", "info").upper().replace("WARN", "WARNING"), logging.INFO)
        fields["_at_ms"] = round(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)
        logger.log(level, message, extra=fields)
    return out.getvalue().encode().splitlines()


def test_ecs_lines_from_elastics_formatter_are_judged_exactly_like_sdk_events():
    run = simulate(
        [
            "callback_outage:channel=alipay,start=2m,duration=3m",
            "channel_down:channel=bank_b,start=5m,duration=2m,fail=0.9,rate=3",
        ],
        duration="9m",
        seed=5,
        telemetry="direct",
        keep_records=False,
    )
    # the formatter writes milliseconds: the SDK side gets the same instants
    events = [
        msgspec.structs.replace(e, timestamp=e.timestamp.replace(microsecond=e.timestamp.microsecond // 1000 * 1000))
        for e in run
    ]
    lines = ecs_lines(events)
    first = json.loads(lines[0])
    assert first["ecs.version"] and first["log"]["logger"] == "payments.ecs" and "process" in first
    intake = Intake()
    from_ecs = [intake.decode(raw) for raw in lines]
    sdk = [encode_finding(f) for f in replay_events(events, DetectionEngine(), drain_s=120)]
    ecs = [encode_finding(f) for f in replay_events(from_ecs, DetectionEngine(), drain_s=120)]
    kinds = {json.loads(f)["finding"]["kind"] for f in sdk}
    assert {"paid_but_pending_incident", "channel_health"} <= kinds
    assert ecs == sdk


# --- fuzzing ------------------------------------------------------------------------------------

ECS_EXTRAS = {
    "ecs.version": "1.2.0",
    "log.logger": "com.example.Pay",
    "process.thread.name": "http-nio-8080-exec-3",
    "process.pid": 4242,
    "error.stack_trace": "java.lang.IllegalStateException\n\tat Pay.run(Pay.java:1)",
    "tags": ["a", "b"],
    "log.origin": {"file": {"name": "Pay.java", "line": 12}},
    "event.kind": "event",
    "event.module": "gateway",
    "service.environment": "prod",
    "host.name": "node-3",
    "data_stream.type": "logs",
    "traceId": "abc",
}


@st.composite
def ecs_renderings(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(contract JSON, the same event as an ECS logger might write it): each field dotted or nested,
    numbers maybe stringified (MDC values are strings), ECS's own fields added, keys shuffled."""
    tree = draw(contract_events())
    flat = _dotted(tree)
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and draw(st.booleans()):
            value = repr(value)
        if path == "log.level" and draw(st.booleans()):
            value = value.upper()
        if isinstance(value, dict) and draw(st.booleans()):  # labels / checks as dotted keys
            for k, v in value.items():
                out[f"{path}.{k}"] = v
            continue
        if path != "@timestamp" and draw(st.booleans()):
            *parents, leaf = path.split(".")
            node = out
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
        else:
            out[path] = value
    for key in draw(st.lists(st.sampled_from(sorted(ECS_EXTRAS)), unique=True)):
        out[key] = ECS_EXTRAS[key]
    keys = draw(st.permutations(list(out)))
    return json.dumps(tree).encode(), json.dumps({k: out[k] for k in keys}).encode()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(ecs_renderings())
def test_fuzz_any_ecs_rendering_of_a_contract_event_is_that_event(pair):
    strict, ecs = pair
    assert Intake().decode(ecs) == contract.decode(strict), ecs


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | words,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(sorted(READ)) | words, inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(READ | {"labels", "orderNo", "payment", "event"})) | words, _json))
@example({"payment": {"order_id": {"x": 1}}})
@example({"@timestamp": 1e300})
def test_fuzz_any_json_object_is_an_event_or_a_contract_error(tree):
    intake = Intake(IntakeSettings(field_map={"orderNo": "payment.order_id"}))
    try:
        event = intake.decode(json.dumps(tree).encode())
    except ContractError:
        return
    assert contract.decode(contract.encode(event)) == event  # what is accepted re-validates strictly


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_any_bytes_are_an_event_or_a_contract_error(raw):
    with contextlib.suppress(ContractError):
        Intake().decode(raw)


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in CORPUS.read_text().splitlines() if raw.strip()]


@pytest.mark.parametrize("case", _corpus(), ids=lambda c: c["name"])
def test_corpus(case):
    intake = Intake(IntakeSettings(field_map=case.get("field_map", {})))
    if case["error"] is None:
        event = intake.decode(case["line"].encode())
        assert event.event.dataset == case["dataset"]
    else:
        with pytest.raises(ContractError) as exc:
            intake.decode(case["line"].encode())
        assert case["error"] in str(exc.value)
