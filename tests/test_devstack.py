"""The devstack servers are real and do what the rest of paywatch relies on."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from paywatch import devstack as ds


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i, v in enumerate(values):
        producer.produce(topic, key=str(i).encode(), value=v)
    assert producer.flush(30) == 0


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_kafka_produce_consume_with_auto_created_topic(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    values = [f"event-{i}".encode() for i in range(20)]
    _produce(kafka_bootstrap, topic, values)
    assert sorted(_consume(kafka_bootstrap, topic, len(values))) == sorted(values)
    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 6


def test_es_is_genuine_elasticsearch_8(es) -> None:
    info = es.info()  # the 8.x client refuses servers without the X-Elastic-Product header
    assert info["version"]["number"].startswith("8.19.")
    assert es.ping()
    assert es.cluster.health(wait_for_status="yellow")["status"] in ("green", "yellow")


def test_es_data_stream_create_conflict_and_aggregations(es) -> None:
    dataset = f"devstacktest.{uuid.uuid4().hex[:8]}"
    stream = f"logs-{dataset}-default"
    es.cluster.put_component_template(
        name=f"{dataset}-mappings",
        template={
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date"},
                    "channel": {"type": "keyword"},
                    "order_id": {"type": "keyword"},
                    "latency_ms": {"type": "long"},
                }
            }
        },
    )
    es.indices.put_index_template(
        name=dataset,
        index_patterns=[f"logs-{dataset}-*"],
        data_stream={},
        composed_of=[f"{dataset}-mappings"],
        priority=500,
        template={"settings": {"number_of_replicas": 0}},
    )
    try:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        ops: list[dict] = []
        for i in range(30):
            ops.append({"create": {"_index": stream, "_id": f"evt-{i}"}})
            ops.append(
                {
                    "@timestamp": (t0 + timedelta(minutes=i)).isoformat(),
                    "channel": ["alipay", "wechat", "card"][i % 3],
                    "order_id": f"o-{i % 10}",
                    "latency_ms": 10 * i,
                }
            )
        resp = es.bulk(operations=ops, refresh=True)
        assert not resp["errors"]
        assert resp["items"][0]["create"]["_index"].startswith(f".ds-{stream}-")

        again = es.bulk(operations=ops[:2], refresh=True)  # same _id, op_type create -> 409, not a dup
        assert again["errors"] and again["items"][0]["create"]["status"] == 409
        assert es.count(index=stream)["count"] == 30

        r = es.search(
            index=stream,
            size=0,
            aggs={
                "per_10m": {"date_histogram": {"field": "@timestamp", "fixed_interval": "10m"}},
                "channels": {"terms": {"field": "channel"}},
                "lat": {"percentiles": {"field": "latency_ms", "percents": [50, 99]}},
                "orders": {"cardinality": {"field": "order_id"}},
                "slow": {"filters": {"filters": {"slow": {"range": {"latency_ms": {"gte": 200}}}}}},
            },
            runtime_mappings={"channel_rt": {"type": "keyword"}},
        )
        aggs = r["aggregations"]
        assert [b["doc_count"] for b in aggs["per_10m"]["buckets"]] == [10, 10, 10]
        assert {b["key"]: b["doc_count"] for b in aggs["channels"]["buckets"]} == {
            "alipay": 10,
            "wechat": 10,
            "card": 10,
        }
        assert 100 <= aggs["lat"]["values"]["50.0"] <= 190
        assert aggs["orders"]["value"] == 10
        assert aggs["slow"]["buckets"]["slow"]["doc_count"] == 10

        dbq = es.delete_by_query(index=stream, query={"term": {"channel": "card"}}, refresh=True)
        assert dbq["deleted"] == 10
        assert es.count(index=stream)["count"] == 20
        assert es.indices.get_data_stream(name=stream)["data_streams"][0]["name"] == stream
    finally:
        es.indices.delete_data_stream(name=stream)
        es.indices.delete_index_template(name=dataset)
        es.cluster.delete_component_template(name=f"{dataset}-mappings")
    assert not es.indices.exists(index=stream)


def test_alertmanager_accepts_and_lists_alerts(alertmanager_factory) -> None:
    am = alertmanager_factory()
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "DevstackProbe", "severity": "page", "channel": "alipay"},
        "annotations": {"summary": "probe"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    assert httpx.post(f"{am.url}/api/v2/alerts", json=[alert], timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    names: list[str] = []
    while time.monotonic() < deadline and "DevstackProbe" not in names:
        names = [a["labels"]["alertname"] for a in httpx.get(f"{am.url}/api/v2/alerts", timeout=10).json()]
        time.sleep(0.2)
    assert "DevstackProbe" in names


@pytest.mark.slow
def test_isolated_kafka_survives_stop_and_restart(kafka_factory, kafka_bootstrap: str) -> None:
    kafka = kafka_factory()
    assert kafka.bootstrap != kafka_bootstrap
    _produce(kafka.bootstrap, "outage", [b"before"])
    kafka.stop()
    assert not kafka.is_up()
    from confluent_kafka.admin import AdminClient

    assert AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).brokers  # shared one untouched
    kafka.start()  # same data dir: the message survived
    assert _consume(kafka.bootstrap, "outage", 1) == [b"before"]


@pytest.mark.slow
def test_isolated_elasticsearch_keeps_data_across_kill(es_factory, es) -> None:
    from elasticsearch import Elasticsearch

    node = es_factory()
    client = Elasticsearch(node.url, request_timeout=60)
    client.index(index="outage", id="1", document={"v": 1}, refresh=True)
    node.kill()  # a crash, not a clean shutdown
    assert not node.is_up()
    assert es.ping()  # the shared node is untouched
    node.start()
    client.cluster.health(index="outage", wait_for_status="yellow", timeout="60s")
    assert client.get(index="outage", id="1")["_source"] == {"v": 1}
    client.close()


def test_second_handle_reuses_running_server_and_leaves_it_alone(kafka_bootstrap: str) -> None:
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    with ds.KafkaServer(port=port) as handle:  # already healthy on that port: reuse, don't spawn
        assert handle.reused and handle.proc is None
    assert handle.is_up()  # leaving the block did not stop someone else's broker
