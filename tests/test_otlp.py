"""OpenTelemetry logs in (paywatch/otlp.py): records sent by the official Python OTLP/HTTP exporter
(`opentelemetry-exporter-otlp-proto-http`, through the SDK's LoggerProvider) to the embedded
server's `POST /v1/logs` become exactly the events the paywatch SDK would have sent, and are
judged the same. The JSON encoding is tested with the exporter's own requests converted by
protobuf's JSON mapping (ids in hex, as OTLP/JSON says)."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import requests
from confluent_kafka import Consumer, Producer
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from stack_support import Stages, stack_config

from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.collectors.dlq import headers_of
from paywatch.contract import ContractError, Event, decode
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.finding import encode_finding
from paywatch.intake import READ, Intake
from paywatch.kafka import consumer_config
from paywatch.otlp import export_logs
from paywatch.simulator.scenarios import simulate
from paywatch.simulator.settings import SimulatorSettings

TOKEN = "otlp-token"
RESOURCE_FIELDS = {"service.name", "service.instance.id", "service.version"}


class RecordingSession(requests.Session):
    """The exporter's HTTP session, keeping each request body and response for the test to read."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[tuple[bytes, requests.Response]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super().request(method, url, *args, **kwargs)
        self.exchanges.append((kwargs.get("data") or b"", response))
        return response


class OtelServices:
    """Each simulated service instance logs through its own OpenTelemetry LoggerProvider (resource:
    service.name, service.instance.id, service.version), exporting over OTLP/HTTP one record at a
    time (SimpleLogRecordProcessor), so records reach the server in the order they were logged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.providers: dict[tuple[str, str], LoggerProvider] = {}
        self.session = RecordingSession()

    def log(self, event: Event) -> None:
        fields = _dotted(msgspec.to_builtins(event))
        service = {k: fields.pop(k) for k in RESOURCE_FIELDS if k in fields}
        key = (service["service.name"], service["service.instance.id"])
        if key not in self.providers:
            provider = LoggerProvider(resource=Resource.create(service))
            exporter = OTLPLogExporter(
                endpoint=f"{self.url}/v1/logs", headers={"Authorization": f"Bearer {TOKEN}"}, session=self.session
            )
            provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
            self.providers[key] = provider
        at = fields.pop("@timestamp")
        level = fields.pop("log.level", None)
        trace, span = fields.pop("trace.id", None), fields.pop("span.id", None)
        if trace:  # OpenTelemetry trace ids are 32 hex digits: only such ids travel as the record's context
            fields["trace.id"] = trace
        if span:
            fields["span.id"] = span
        since_epoch = datetime.fromisoformat(at.replace("Z", "+00:00")) - datetime(1970, 1, 1, tzinfo=UTC)
        nanos = (since_epoch.days * 86400 + since_epoch.seconds) * 10**9 + since_epoch.microseconds * 1000
        self.providers[key].get_logger("payments").emit(
            timestamp=nanos,
            severity_text=level.upper() if level else None,
            body=fields.pop("message", None),
            attributes=fields,
        )

    def close(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@pytest.fixture
def server(tmp_path):
    store = SqliteStore(tmp_path / "otlp.sqlite")
    received: list[Event] = []
    server = IngestServer(received.extend, store, TOKEN, "127.0.0.1", 0, 1 << 24, Intake())
    server.start()
    server.received = received  # type: ignore[attr-defined]
    server.store = store  # type: ignore[attr-defined]
    yield server
    server.stop()
    store.close()


def test_the_official_exporter_sends_events_judged_exactly_like_sdk_events(server):
    run = simulate(
        ["callback_outage:channel=alipay,start=2m,duration=3m", "service_dies:service=compensation-job,start=5m"],
        duration="8m",
        seed=7,
        telemetry="direct",
        keep_records=False,
        settings=SimulatorSettings(peak_orders_per_s=0.6),
    )
    events = list(run)
    services = OtelServices(server.url)
    try:
        for event in events:
            services.log(event)
    finally:
        services.close()
    assert all(r.status_code == 200 for _, r in services.session.exchanges)
    received = server.received
    assert len(received) == len(events)
    assert received == events  # the same events, field for field
    sdk = [encode_finding(f) for f in replay_events(events, DetectionEngine(), drain_s=120)]
    otlp = [encode_finding(f) for f in replay_events(received, DetectionEngine(), drain_s=120)]
    kinds = {json.loads(f)["finding"]["kind"] for f in sdk}
    assert {"paid_but_pending_incident", "service_down"} <= kinds, kinds
    assert otlp == sdk
    # heartbeats came as records too (the dying service's silence is what pages)
    assert any(e.heartbeat is not None for e in received)


def _otlp_json(body: bytes) -> bytes:
    """The exporter's protobuf request in OTLP/JSON: protobuf's JSON mapping, ids in hex."""
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    tree = MessageToDict(request)
    for resource_logs in tree["resourceLogs"]:
        for scope_logs in resource_logs["scopeLogs"]:
            for record in scope_logs["logRecords"]:
                for name in ("traceId", "spanId"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(tree).encode()


def test_json_encoding_and_partial_rejection_with_reasons(server):
    services = OtelServices(server.url)
    line = {
        "@timestamp": "2026-11-26T10:00:00.125Z",
        "event": {"id": "e-1", "dataset": "paywatch.payment", "action": "channel_callback", "outcome": "success"},
        "service": {"name": "callback-receiver", "instance": {"id": "cb-1"}},
        "payment": {"order_id": "o-1", "attempt_id": "a-1", "channel": "alipay", "amount_minor": 1250},
        "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        "span": {"id": "00f067aa0ba902b7"},
    }
    event = msgspec.convert(line, Event)
    broken = msgspec.structs.replace(
        event,
        event=msgspec.structs.replace(event.event, id="e-2"),
        payment=msgspec.structs.replace(event.payment, currency="yuan"),
    )
    try:
        services.log(event)
        services.log(broken)
    finally:
        services.close()
    [(_, ok), (_, refused)] = services.session.exchanges
    assert ok.status_code == 200 and ExportLogsServiceResponse.FromString(ok.content) == ExportLogsServiceResponse()
    # OTLP's partial success: the record is counted as rejected, the reason given, and dead-lettered
    partial = ExportLogsServiceResponse.FromString(refused.content).partial_success
    assert partial.rejected_log_records == 1 and "$.payment.currency" in partial.error_message
    [letter] = server.store.dead_letters()
    assert letter["reason"].startswith("record 1: ") and b"yuan" in letter["raw"]
    assert server.received == [event]

    # the same requests in OTLP/JSON
    server.received.clear()
    for body, _ in services.session.exchanges:
        reply = requests.post(
            f"{server.url}/v1/logs",
            data=_otlp_json(body),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    assert server.received == [event]
    assert reply.json()["partialSuccess"]["rejectedLogRecords"] == "1"

    # refused as a whole: no token, not OTLP
    assert requests.post(f"{server.url}/v1/logs", data=b"x", timeout=10).status_code == 401
    garbage = requests.post(
        f"{server.url}/v1/logs",
        data=b"\xff\xff\xff",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert garbage.status_code == 400 and "ExportLogsServiceRequest" in garbage.json()["error"]


@pytest.mark.slow
def test_otlp_json_on_kafka_is_relayed_to_the_contract_topics(server, kafka_bootstrap, tmp_path):
    """What the OpenTelemetry Collector's Kafka exporter writes (one OTLP/JSON request per message)
    becomes contract events on their topics, keyed as the contract says; a broken record is a
    dead letter with the reason."""
    config, config_path = stack_config(tmp_path, kafka_bootstrap, "http://127.0.0.1:9")
    topics = config.kafka.topics
    payment = msgspec.convert(
        {
            "@timestamp": "2026-11-26T10:00:00.125Z",
            "event": {"id": "k-1", "dataset": "paywatch.payment", "action": "order_paid", "outcome": "success"},
            "service": {"name": "order-service", "instance": {"id": "o-1"}},
            "payment": {"order_id": "ORD-K1", "status": "paid"},
        },
        Event,
    )
    beat = msgspec.convert(
        {
            "@timestamp": "2026-11-26T10:00:01Z",
            "event": {"id": "k-2", "dataset": "paywatch.heartbeat"},
            "service": {"name": "compensation-job", "instance": {"id": "c-1"}},
            "heartbeat": {"interval_s": 10.0, "seq": 3, "status": "up", "checks": {"db": "ok"}},
        },
        Event,
    )
    broken = msgspec.structs.replace(
        payment, event=msgspec.structs.replace(payment.event, id="k-3", action="teleported")
    )
    services = OtelServices(server.url)  # the official exporter's requests, as a Collector forwards them
    try:
        for event in (payment, beat, broken):
            services.log(event)
    finally:
        services.close()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for body, _ in services.session.exchanges:
        producer.produce(topics.otlp_logs, _otlp_json(body))
    assert producer.flush(30) == 0

    stages = Stages(config_path, tmp_path)
    consumer = Consumer(consumer_config(config.kafka, f"otlp-check-{config.elasticsearch.namespace}"))
    consumer.subscribe([topics.payments, topics.heartbeats, topics.dead_letter])
    got: dict[str, list] = {}
    try:
        stages.start("relay-otlp", "--consumer-group", f"relay-{config.elasticsearch.namespace}")

        def all_three() -> bool:
            while (msg := consumer.poll(0.5)) is not None:
                if msg.error() is None:
                    got.setdefault(msg.topic(), []).append(msg)
            return sum(len(v) for v in got.values()) >= 3

        stages.wait_for(all_three, 120, "the relayed payment, heartbeat and dead letter")
    finally:
        stages.stop_all()
        consumer.close()
    [paid] = got[topics.payments]
    assert (paid.key(), decode(paid.value())) == (b"ORD-K1", payment)
    [hb] = got[topics.heartbeats]
    assert (hb.key(), decode(hb.value())) == (b"compensation-job", beat)
    [dead] = got[topics.dead_letter]
    reason = headers_of(dead)["paywatch.reason"]
    assert reason.startswith("record 1: event.action 'teleported'") and b"teleported" in dead.value()


_any_value = st.recursive(
    st.builds(lambda v: {"stringValue": v}, st.text(max_size=8))
    | st.builds(lambda v: {"intValue": v}, st.integers() | st.text(max_size=4))
    | st.builds(lambda v: {"doubleValue": v}, st.floats(allow_nan=False, allow_infinity=False))
    | st.builds(lambda v: {"boolValue": v}, st.booleans())
    | st.just({}),
    lambda inner: (
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3))
        | st.builds(
            lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}},
            st.lists(st.tuples(st.text(max_size=8), inner), max_size=3),
        )
    ),
    max_leaves=8,
)
_keys = st.sampled_from(sorted(READ)) | st.text(max_size=10)
_attrs = st.lists(st.builds(lambda k, v: {"key": k, "value": v}, _keys, _any_value), max_size=6)
_records = st.fixed_dictionaries(
    {},
    optional={
        # beyond the dates a datetime holds too: such a record is rejected, never the request
        "timeUnixNano": st.integers(-(2**80), 2**80) | st.text(max_size=20),
        "observedTimeUnixNano": st.integers(-(2**80), 2**80),
        "severityNumber": st.integers(-3, 30),
        "severityText": st.text(max_size=6),
        "body": _any_value,
        "attributes": _attrs,
        "traceId": st.text(max_size=32),
        "spanId": st.text(max_size=16),
    },
)
_requests = st.builds(
    lambda resource, records: {
        "resourceLogs": [{"resource": {"attributes": resource}, "scopeLogs": [{"logRecords": records}]}]
    },
    _attrs,
    st.lists(_records, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(_requests)
def test_fuzz_any_otlp_json_request_gives_events_or_reasons(request):
    export = export_logs(json.dumps(request).encode(), "application/json", None, Intake())
    n = sum(len(s["logRecords"]) for r in request["resourceLogs"] for s in r["scopeLogs"])
    assert len(export.events) + len(export.rejected) == n
    reply = json.loads(export.reply)
    if export.rejected:
        assert reply["partialSuccess"]["rejectedLogRecords"] == str(len(export.rejected))
    else:
        assert reply == {}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["application/x-protobuf", "application/json"]))
def test_fuzz_any_body_is_an_export_or_a_contract_error(body, content_type):
    with contextlib.suppress(ContractError):
        export_logs(body, content_type, None, Intake())
