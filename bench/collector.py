"""Collector throughput and CPU cost: 200,000 events from Kafka into Elasticsearch.

    .venv/bin/python bench/collector.py [--events 200000] [--bootstrap 127.0.0.1:19092] [--es-url http://127.0.0.1:19200]

Produces the events first (not measured), then runs the collector in this process until
every event is stored and prints events/s (wall clock) and collector CPU µs per event
(process CPU time, all threads incl. librdkafka and the Elasticsearch client, / events).
Also prints the CPU cost of the pure pipeline (decode, validate, mask, encode) alone, and,
to judge the machine, what the standard library's json.loads costs on the same events.
Uses its own topics and data stream namespace and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient

from paywatch.collectors.collector import build_batch, connect, routes
from paywatch.config import Config
from paywatch.elastic import client, data_stream
from paywatch.kafka import ensure_topics

PAN = "4111111111111111"
CHANNELS = ("alipay", "wechatpay", "stripe", "bank_a", "bank_b")
ACTIONS = ("payment_requested", "channel_callback", "channel_query_result")


def event(i: int) -> bytes:
    """A realistic payment event; 1 in 100 carries a card number in its message (masked on the way)."""
    doc = {
        "@timestamp": "2026-11-21T10:00:00.123Z",
        "event": {
            "id": f"bench-{i:08d}",
            "dataset": "paywatch.payment",
            "action": ACTIONS[i % 3],
            "outcome": "success",
        },
        "service": {"name": "payment-gateway", "instance": {"id": "gw-1"}, "version": "4.2.0"},
        "payment": {
            "order_id": f"ord-{i // 3:08d}",
            "attempt_id": f"att-{i:08d}",
            "channel": CHANNELS[i % 5],
            "method": "wallet",
            "merchant_id": "m-1001",
            "amount_minor": 1000 + i % 5000,
            "currency": "CNY",
            "status": "SUCCESS",
            "latency_ms": i % 900,
        },
        "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        "labels": {"region": "cn-east"},
    }
    if i % 100 == 0:
        doc["message"] = f"customer card {PAN} charged"
    return json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--es-url", default="http://127.0.0.1:19200")
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    n = args.events
    tag = f"bench{uuid.uuid4().hex[:8]}"
    config = Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": args.bootstrap,
                "topics": {"payments": f"{tag}.payments", "dead_letter": f"{tag}.dlq"},
            },
            "elasticsearch": {"url": args.es_url, "namespace": tag},
            "collector": {"group_id": tag, "metrics_port": None, "batch_size": args.batch_size},
        }
    )
    topic = config.kafka.topics.payments
    ensure_topics(config.kafka, [topic], partitions=6)
    values = [event(i) for i in range(n)]
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 50, "compression.type": "lz4"})
    for i, v in enumerate(values):
        while True:
            try:
                producer.produce(topic, v, f"ord-{i // 3:08d}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    del producer
    print(f"produced {n} events ({sum(map(len, values)) / n:.0f} bytes avg) to {topic}")

    collector = connect(config, should_stop=lambda: collector.handled >= n)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    collector.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

    es = client(config.elasticsearch)
    index = data_stream("paywatch.payment", tag)
    es.indices.refresh(index=index)
    stored = es.count(index=index)["count"]
    print(f"stored {stored} of {n}")
    print(
        f"collector: {n / wall:,.0f} events/s wall, {cpu / n * 1e6:.1f} µs CPU/event "
        f"(process CPU {cpu:.2f} s, wall {wall:.2f} s)"
    )

    table = routes(config.kafka.topics, tag, config.collector.max_event_bytes)
    messages = [Message(topic=topic, partition=0, offset=i, value=v) for i, v in enumerate(values)]
    now = datetime.now(UTC)
    cpu0 = time.process_time()
    for start in range(0, n, args.batch_size):
        build_batch(messages[start : start + args.batch_size], table, now, config.collector.max_event_bytes)
    pure = (time.process_time() - cpu0) / n * 1e6
    print(f"pure pipeline (decode, validate, mask, encode, bulk line): {pure:.1f} µs CPU/event")

    cpu0 = time.process_time()
    for v in values:
        json.loads(v)
    ref = (time.process_time() - cpu0) / n * 1e6
    print(f"machine reference: json.loads of the same events takes {ref:.1f} µs CPU/event")

    es.indices.delete_data_stream(name=index)
    AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics([topic, config.kafka.topics.dead_letter])


if __name__ == "__main__":
    main()
