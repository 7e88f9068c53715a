"""The collector end to end on REAL Kafka and Elasticsearch: exactly once by event.id, through
malformed input, a SIGKILL mid-batch and a 30 s Elasticsearch outage; no PAN reaches storage.

Every test uses its own topics, consumer group and data stream namespace, so tests (and other
engineers' sessions on the shared servers) never see each other's data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer
from polling import wait_for

from paywatch.app.config import Config
from paywatch.collectors.collector import Collector, connect
from paywatch.collectors.dlq import KIND, REASON, SOURCE_OFFSET, SOURCE_TOPIC, headers_of
from paywatch.devstack import free_port
from paywatch.elastic import data_stream

PAN = "4111111111111111"
MASKED = "411111******1111"
ROOT = Path(__file__).resolve().parents[1]


def make_config(kafka_bootstrap: str, es_url: str, **collector: object) -> Config:
    tag = uuid.uuid4().hex[:10]
    topics = {
        name: f"t{tag}.{name}"
        for name in ("payments", "heartbeats", "logs", "findings", "alerts", "actions", "dead_letter")
    }
    return Config.model_validate(
        {
            "backend": "kafka",
            "kafka": {"bootstrap_servers": kafka_bootstrap, "topics": topics},
            "elasticsearch": {"url": es_url, "namespace": f"t{tag}"},
            "collector": {
                "consumer_group": f"collector-{tag}",
                "metrics_port": None,
                "retry_initial_s": 0.2,
                "retry_max_s": 2.0,
                **collector,
            },
        }
    )


def payment(i: int, tag: str = "", **over: object) -> dict:
    doc = {
        "@timestamp": "2026-11-21T10:00:00.123Z",
        "event": {"id": f"{tag}e{i}", "dataset": "paywatch.payment", "action": "channel_callback"},
        "service": {"name": "callback-receiver", "instance": {"id": "cb-1"}},
        "payment": {"order_id": f"o{i}", "attempt_id": f"a{i}", "channel": "alipay", "amount_minor": 100 + i},
    }
    doc.update(over)
    return doc


def produce(config: Config, topic: str, values: list[bytes], keys: list[bytes] | None = None) -> None:
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers, "linger.ms": 20})
    for n, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, keys[n] if keys else None)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def encoded(docs: list[dict]) -> list[bytes]:
    return [json.dumps(d).encode() for d in docs]


class Running:
    """A collector on a thread of this process, stopped on exit."""

    def __init__(self, config: Config) -> None:
        self.stop = threading.Event()
        self.collector: Collector = connect(
            config.collector,
            config.kafka,
            config.elasticsearch,
            config.intake,
            config.pan,
            should_stop=self.stop.is_set,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.collector.run()
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def collector_in_thread() -> Iterator[Callable[[Config], Running]]:
    running: list[Running] = []

    def start(config: Config) -> Running:
        r = Running(config)
        running.append(r)
        return r

    yield start
    for r in running:
        r.close()


def count(es, config: Config, dataset: str = "paywatch.payment") -> int:
    index = data_stream(dataset, config.elasticsearch.namespace)
    if not es.indices.exists(index=index):
        return 0
    es.indices.refresh(index=index)
    return es.count(index=index)["count"]


def assert_exactly_once(es, config: Config, ids: list[str], dataset: str = "paywatch.payment") -> None:
    """Every id stored once, nothing else stored."""
    index = data_stream(dataset, config.elasticsearch.namespace)
    es.indices.refresh(index=index)
    assert es.count(index=index)["count"] == len(ids)
    assert es.count(index=index, query={"terms": {"event.id": ids}})["count"] == len(ids)
    dupes = es.search(
        index=index,
        size=0,
        aggs={"d": {"terms": {"field": "event.id", "min_doc_count": 2, "size": 10}}},
    )["aggregations"]["d"]["buckets"]
    assert dupes == []


def read_dead_letters(config: Config, expected: int, timeout: float = 60) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([config.kafka.topics.dead_letter])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expected:
            out.extend(m for m in consumer.consume(1000, 1.0) if m.error() is None)
        # nothing more arrives than expected
        out.extend(m for m in consumer.consume(1000, 2.0) if m.error() is None)
    finally:
        consumer.close()
    return out


def test_events_emitted_with_the_sdk_are_stored_exactly_once_by_event_id(
    kafka_bootstrap, es_url, es, collector_in_thread, tmp_path
):
    from paywatch.collectors.sdk import open_logger

    config = make_config(kafka_bootstrap, es_url)
    config.sdk.spill_dir = tmp_path / "spool"
    at = datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)
    running = collector_in_thread(config)
    log = open_logger("payment-gateway", config=config, instance_id="gw-1")

    def emit(i: int) -> None:
        log.payment(
            "channel_callback",
            event_id=f"e{i}",
            timestamp=at,
            order_id=f"o{i}",
            attempt_id=f"a{i}",
            channel="alipay",
            amount_minor=100 + i,
            currency="CNY",
            outcome="success",
        )

    for i in range(3000):
        emit(i)
    for i in range(1500):  # the same events again: what a service's retry or a replay does
        emit(i)
    log.error("callback signature invalid", order_id="o1", channel="alipay")
    assert log.flush(60)
    log.close()
    wait_for(
        lambda: (
            count(es, config) >= 3000
            and count(es, config, "paywatch.app") == 1
            and count(es, config, "paywatch.heartbeat") >= 1
        ),
        120,
        "payments, the application log and the heartbeats",
    )
    time.sleep(2)  # give a (wrong) duplicate the chance to show up
    assert_exactly_once(es, config, [f"e{i}" for i in range(3000)])
    # a data stream is read by search, not GET by id
    index = data_stream("paywatch.payment", config.elasticsearch.namespace)
    [hit] = es.search(index=index, query={"ids": {"values": ["e7"]}})["hits"]["hits"]
    stored = hit["_source"]
    # event time is the producer's instant, processing time is when the collector stored it
    assert datetime.fromisoformat(stored["@timestamp"]) == at
    assert datetime.fromisoformat(stored["event"]["ingested"]) > at
    assert stored["payment"]["amount_minor"] == 107
    assert stored["service"]["instance"]["id"] == "gw-1"
    props = next(iter(es.indices.get_mapping(index=index).values()))["mappings"]["properties"]
    assert props["payment"]["properties"]["amount_minor"]["type"] == "long"
    assert props["payment"]["properties"]["order_id"]["type"] == "keyword"
    assert props["event"]["properties"]["ingested"]["type"] == "date"
    running.close()


def malformed(i: int) -> tuple[bytes, str]:
    """Ten kinds of bad input, each with the words its dead-letter reason must contain."""
    kind = i % 10
    if kind == 0:
        return b"{not json " + str(i).encode(), "not valid JSON"
    if kind == 1:
        return json.dumps(payment(i, "bad", payment={"order_id": "o", "amount_minor": "12.50"})).encode(), (
            "$.payment.amount_minor"
        )
    if kind == 2:  # no event.id is allowed (an ECS line gets one from its content); no action is not
        return json.dumps(payment(i, "bad", event={"dataset": "paywatch.payment"})).encode(), "event.action None"
    if kind == 3:
        return json.dumps(payment(i, "bad", event={"id": f"b{i}", "dataset": "paywatch.nope"})).encode(), (
            "$.event.dataset"
        )
    if kind == 4:
        return json.dumps(payment(i, "bad", message="x" * 70_000)).encode(), "byte limit"
    if kind == 5:
        return b"", "empty message"
    if kind == 6:
        return b"[1, 2, 3]", "Expected `object`"
    if kind == 7:
        return json.dumps(payment(i, "bad", **{"@timestamp": "2026-11-22 10:00"})).encode(), "@timestamp"
    if kind == 8:  # a typo in paywatch's own namespace (other unknown fields are ECS extras, dropped)
        fields = {"order_id": f"o{i}", "attempt_id": f"a{i}", "channel": "alipay", "surprise": 1}
        return json.dumps(payment(i, "bad", payment=fields)).encode(), "unknown field payment.surprise"
    return b"\xff\xfe binary", "not valid JSON"


@pytest.mark.slow
def test_malformed_messages_go_to_the_dead_letter_topic_and_good_ones_are_all_indexed(
    kafka_bootstrap, es_url, es, collector_in_thread
):
    config = make_config(kafka_bootstrap, es_url)
    topics = config.kafka.topics
    good = encoded([payment(i, "g") for i in range(10_000)])
    bad = [malformed(i) for i in range(1000)]
    values = list(good)
    for n, (raw, _) in enumerate(bad):  # spread the bad ones through the stream
        values.insert(n * 11 + 5, raw)
    expect = {raw: why for raw, why in bad if raw}
    collector_in_thread(config)
    produce(config, topics.payments, values)
    wait_for(lambda: count(es, config) >= 10_000, 180, "10,000 good events")
    assert_exactly_once(es, config, [f"ge{i}" for i in range(10_000)])
    dead = read_dead_letters(config, 1000)
    assert len(dead) == 1000
    assert sorted(m.value() or b"" for m in dead) == sorted(raw for raw, _ in bad)
    for m in dead:
        h = headers_of(m)
        assert h[SOURCE_TOPIC] == topics.payments
        assert h[KIND] == "invalid"
        raw = m.value() or b""
        assert int(h[SOURCE_OFFSET]) >= 0
        if raw:  # byte-for-byte original, and the reason names the defect
            assert expect[raw] in h[REASON], (raw[:80], h[REASON])
        else:
            assert "empty message" in h[REASON]


def test_no_pan_reaches_elasticsearch(kafka_bootstrap, es_url, es, collector_in_thread):
    """Produced raw, as a non-SDK service (Java, Go, a replay) would: the SDK's masking must not
    be what keeps card numbers out of Elasticsearch."""
    config = make_config(kafka_bootstrap, es_url)
    topics = config.kafka.topics
    spaced = "4111 1111 1111 1111"
    events = [
        payment(1, "pan", message=f"card {PAN} declined"),
        payment(2, "pan", labels={"note": f"customer typed {spaced}"}),
        {
            "@timestamp": "2026-11-22T10:00:00Z",
            "event": {"id": "pan-log", "dataset": "paywatch.app"},
            "service": {"name": "checkout", "instance": {"id": "c-1"}},
            "log": {"level": "error"},
            "message": "charge failed",
            "error": {"type": "CardError", "message": f"bad card {PAN}"},
        },
    ]
    events[0]["payment"]["error_code"] = f"E{PAN}"
    produce(config, topics.payments, encoded(events[:2]))
    produce(config, topics.logs, encoded(events[2:]))
    alert = {
        "@timestamp": "2026-11-22T10:00:01Z",
        "event": {"id": "pan-alert", "dataset": "paywatch.alert"},
        "alert": {"summary": f"order paid with {PAN}"},
    }
    produce(config, topics.alerts, encoded([alert]))
    collector_in_thread(config)
    wait_for(
        lambda: (
            count(es, config) == 2
            and count(es, config, "paywatch.app") == 1
            and count(es, config, "paywatch.alert") == 1
        ),
        120,
        "the PAN-bearing documents",
    )
    every = f"logs-paywatch.*-{config.elasticsearch.namespace}"
    hits = es.search(index=every, size=100)["hits"]["hits"]
    assert len(hits) == 4
    sources = json.dumps([h["_source"] for h in hits])
    assert PAN not in sources and spaced not in sources
    assert sources.count(MASKED) == 4 and sources.count("4111 11** **** 1111") == 1
    for q in (PAN, f'"{spaced}"', f"*{PAN}*"):
        found = es.search(index=every, query={"query_string": {"query": q, "fields": ["*"]}})
        assert found["hits"]["total"]["value"] == 0, q
    assert es.count(index=every, query={"match": {"message": MASKED}})["count"] == 1


def test_documents_elasticsearch_refuses_go_to_the_dead_letter_topic(kafka_bootstrap, es_url, es, collector_in_thread):
    config = make_config(kafka_bootstrap, es_url)
    topics = config.kafka.topics

    def alert(i: int, page: object) -> dict:
        return {
            "@timestamp": "2026-11-21T10:00:01Z",
            "event": {"id": f"al-{i}", "dataset": "paywatch.alert"},
            "alert": {"name": "PaidButPending", "status": "firing", "page": page},
        }

    # alerts/es_mapping.json maps alert.page as boolean: "maybe" passes the collector's checks
    # but Elasticsearch refuses the document
    docs = [alert(i, True) for i in range(5)] + [alert(i, "maybe") for i in range(5, 8)]
    produce(config, topics.alerts, encoded(docs))
    collector_in_thread(config)
    wait_for(lambda: count(es, config, "paywatch.alert") == 5, 120, "the valid alert documents")
    dead = read_dead_letters(config, 3)
    assert sorted(m.value() for m in dead) == sorted(encoded(docs[5:]))
    for m in dead:
        h = headers_of(m)
        assert h[KIND] == "rejected" and h[SOURCE_TOPIC] == topics.alerts
        assert h[REASON].startswith("elasticsearch refused the document (400 ")
        assert "alert.page" in h[REASON]
    index = data_stream("paywatch.alert", config.elasticsearch.namespace)
    props = next(iter(es.indices.get_mapping(index=index).values()))["mappings"]["properties"]
    assert props["alert"]["properties"]["page"]["type"] == "boolean"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The collector's /metrics page as (name, labels without otel_*) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(i for i in s.labels.items() if not i[0].startswith("otel_")))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def write_config(config: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


def collect_process(config_file: Path, log: Path) -> subprocess.Popen:
    paywatch = Path(sys.executable).with_name("paywatch")
    return subprocess.Popen(
        [str(paywatch), "collect", "--config", str(config_file)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_collector_killed_mid_batch_and_restarted_stores_each_event_exactly_once(kafka_bootstrap, es_url, es, tmp_path):
    port = free_port()
    config = make_config(kafka_bootstrap, es_url, batch_size=500, metrics_port=port)
    n = 30_000
    produce(config, config.kafka.topics.payments, encoded([payment(i, "k") for i in range(n)]))
    cfg = write_config(config, tmp_path / "paywatch.yaml")
    log = tmp_path / "collect.log"
    proc = collect_process(cfg, log)
    try:
        wait_for(lambda: count(es, config) >= 2000, 120, "the first batches")
        metrics = scrape(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = count(es, config)
        assert 0 < killed_at < n, "the kill must land mid-stream"
        proc = collect_process(cfg, log)
        wait_for(lambda: count(es, config) >= n, 180, "all events after the restart")
        time.sleep(2)
        assert_exactly_once(es, config, [f"ke{i}" for i in range(n)])
        # the collector's own heartbeats (through the SDK) are stored like any service's
        wait_for(lambda: count(es, config, "paywatch.heartbeat") >= 1, 60, "the collector's heartbeat")
        beats = es.search(index=data_stream("paywatch.heartbeat", config.elasticsearch.namespace))["hits"]["hits"]
        assert {b["_source"]["service"]["name"] for b in beats} == {"paywatch-collect"}
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()[-3000:]
    # the health the process served while it ran
    assert metrics[("paywatch_collector_events_total", (("result", "indexed"),))] >= 500
    lag = [v for (name, labels), v in metrics.items() if name == "paywatch_collector_consumer_lag"]
    assert lag and max(lag) > 0  # killed with most of the 30,000 still to go
    assert ("paywatch_collector_bulk_duration_seconds_count", ()) in metrics


@pytest.mark.slow
def test_elasticsearch_down_for_30s_pauses_and_loses_nothing(kafka_bootstrap, es_factory, collector_in_thread):
    from elasticsearch import Elasticsearch

    server = es_factory()
    config = make_config(kafka_bootstrap, server.url)
    isolated = Elasticsearch(server.url, request_timeout=60)
    topics = config.kafka.topics
    running = collector_in_thread(config)
    produce(config, topics.payments, encoded([payment(i, "x") for i in range(2000)]))
    wait_for(lambda: count(isolated, config) == 2000, 120, "the events before the outage")

    server.stop()
    produce(config, topics.payments, encoded([payment(i, "x") for i in range(2000, 6000)]))
    wait_for(lambda: running.collector.paused, 30, "consumption to pause")
    time.sleep(30)
    assert running.thread.is_alive() and running.error is None
    server.start()

    wait_for(lambda: count(isolated, config) >= 6000, 180, "the events sent during the outage")
    time.sleep(2)
    assert_exactly_once(isolated, config, [f"xe{i}" for i in range(6000)])
    wait_for(lambda: not running.collector.paused, 120, "consumption to resume")
    running.close()
    isolated.close()


def test_every_message_is_counted_once_as_indexed_or_duplicate(kafka_bootstrap, es_url, es, collector_in_thread):
    """A bulk answered `errors: false` is counted without reading its items; one with 409s item by
    item. Counters are process-wide: judge what this collector added."""
    from prometheus_client.parser import text_string_to_metric_families

    from paywatch.metrics import start_metrics_server

    def events_total() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {
            s.labels["result"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "paywatch_collector_events_total"
        }

    port = free_port()
    server = start_metrics_server(port)
    try:
        config = make_config(kafka_bootstrap, es_url)
        before = events_total()
        running = collector_in_thread(config)
        produce(config, config.kafka.topics.payments, encoded([payment(i) for i in range(300)]))
        wait_for(lambda: running.collector.handled >= 300, 120, "the first 300 events")
        # the same 100 events again, and 50 new ones in the same batch: a bulk with 409s
        again = [payment(i) for i in range(100)] + [payment(i) for i in range(300, 350)]
        produce(config, config.kafka.topics.payments, encoded(again))
        wait_for(lambda: running.collector.handled >= 450, 120, "the repeated events")
        added = {k: v - before.get(k, 0) for k, v in events_total().items()}
    finally:
        server.shutdown()
    assert running.collector.handled == 450
    assert added.get("indexed") == 350 and added.get("duplicate") == 100
    assert_exactly_once(es, config, [f"e{i}" for i in range(350)])
