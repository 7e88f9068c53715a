"""Collector side by side with the ideal pipeline: 200,000 events from Kafka into Elasticsearch.

    .venv/bin/python bench/collector.py [--events 200000] [--rounds 2] [--bootstrap 127.0.0.1:19092] [--es-url http://127.0.0.1:19200]

Produces the events first (not measured), then, alternately `--rounds` times, the ideal
pipeline and the collector each read the whole topic (own consumer group) into the same
Elasticsearch (own data stream, same index template) until every event is stored.

Like with like: the ideal pipeline is the floor for the collector's job, doing the same
essential work with nothing else: the same consumer settings and batch size, each message's
bytes put as they are into a bulk `create` body (`_id` from partition and offset, so a re-read
is still idempotent), the bulk request on a worker thread while the next batch is read and
built (as the collector does), the same response filter and its all-created shortcut, a
synchronous commit after the bulk is acknowledged, its consumer closed inside the measurement
(as the collector's run() does), and the start-up heap frozen for the cycle collector
(`gc.freeze()`, as `paywatch collect` does before its loop). What it skips is what the
collector is for: decoding into the contract and checking it, the card-number policy,
`event.ingested`, routing and dead letters.

Printed for each round: events/s (wall clock from the first message read) and CPU µs per
event (process CPU, all threads incl. librdkafka and the Elasticsearch client, / events);
then the ratios of the best rounds; then, on the same events in this process, the CPU of the
collector's pure pipeline, of the native fast path alone (on every event, and on those with a
card number, which it masks through pan.mask_text), of the Python path on those, and of its steps alone
on every event (decode with the contract's checks, the card-number pre-scan, encoding), so the
gap can be read off, and what the standard library's json.loads costs, to judge the machine.
Uses its own topics and data stream namespaces and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from paywatch.app.config import Config
from paywatch.collectors.collector import BULK_FILTER, _native_lines, build_batch, connect, routes
from paywatch.collectors.templates import install_templates
from paywatch.contract import encode
from paywatch.elastic import client, data_stream
from paywatch.intake import Intake
from paywatch.kafka import consumer_config, ensure_topics
from paywatch.pan import may_contain_pan

PAN = "4111111111111111"
CHANNELS = ("alipay", "wechatpay", "stripe", "bank_a", "bank_b")
ACTIONS = ("payment_requested", "channel_callback", "channel_query_result")


def event(i: int) -> bytes:
    """A realistic payment event, its fields in the contract's order as the SDK writes them; 1 in
    100 carries a card number in its message (masked on the way)."""
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
        **({"message": f"customer card {PAN} charged"} if i % 100 == 0 else {}),
        "trace": {"id": "4bf92f3577b34da6a3ce929d0e0e4736"},
        "labels": {"region": "cn-east"},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def bench_config(args: argparse.Namespace, tag: str, namespace: str) -> Config:
    return Config.model_validate(
        {
            "kafka": {
                "bootstrap_servers": args.bootstrap,
                "topics": {"payments": f"{tag}.payments", "dead_letter": f"{tag}.dlq"},
            },
            "elasticsearch": {"url": args.es_url, "namespace": namespace},
            "collector": {"consumer_group": namespace, "metrics_port": None, "batch_size": args.batch_size},
        }
    )


class FirstMessage:
    """Wraps a consumer to note when the first message arrived: the group join before it (seconds,
    the broker's initial rebalance delay) is the same for both and is not what is compared."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self.at: float | None = None

    def consume(self, *args: object) -> list[Message]:
        messages = self._consumer.consume(*args)
        if messages and self.at is None:
            self.at = time.perf_counter()
        return messages

    def __getattr__(self, name: str) -> object:
        return getattr(self._consumer, name)


def ideal(config: Config, n: int) -> tuple[float, float]:
    """The floor: raw bytes into bulk create bodies, commit after ack; like the collector, the next
    batch is read and built while the current one is indexed. (wall s, CPU s)"""
    es = client(config.elasticsearch)
    topic = config.kafka.topics.payments
    stream = data_stream("paywatch.payment", config.elasticsearch.namespace)
    action = b'{"create":{"_index":"%s","_id":"%%d-%%d"}}\n' % stream.encode()
    consumer = FirstMessage(Consumer(consumer_config(config.kafka, config.collector.consumer_group)))
    consumer.subscribe([topic])
    pool = ThreadPoolExecutor(1)
    in_flight: tuple[Future[Any], int, dict[int, int]] | None = None  # bulk request, messages, offsets
    stored = 0
    cpu0 = time.process_time()
    while stored < n:
        messages = consumer.consume(config.collector.batch_size, 1.0 if in_flight is None else 0.05)
        body = b"".join([action % (m.partition(), m.offset()) + m.value() + b"\n" for m in messages])
        offsets: dict[int, int] = {}
        for m in messages:
            offsets[m.partition()] = m.offset() + 1
        if in_flight is not None:
            request, count, done = in_flight
            resp = request.result()
            if resp["errors"]:  # the collector's shortcut too: no per-item loop when every document was created
                stored += sum(1 for item in resp["items"] if item["create"]["status"] in (201, 409))
            else:
                stored += count
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in done.items()], asynchronous=False)
        in_flight = None
        if messages:
            in_flight = (pool.submit(es.bulk, operations=body, filter_path=BULK_FILTER), len(messages), offsets)
    consumer.close()  # inside the measurement, as the collector's run() closes its consumer
    pool.shutdown()
    assert consumer.at is not None
    return time.perf_counter() - consumer.at, time.process_time() - cpu0


def collector(config: Config, n: int) -> tuple[float, float]:
    """paywatch's collector, until it has handled n messages. (wall s, CPU s)"""
    running = connect(
        config.collector,
        config.kafka,
        config.elasticsearch,
        config.intake,
        config.pan,
        should_stop=lambda: running.handled >= n,
    )
    running.consumer = consumer = FirstMessage(running.consumer)  # type: ignore[assignment]
    cpu0 = time.process_time()
    running.run()
    assert consumer.at is not None
    return time.perf_counter() - consumer.at, time.process_time() - cpu0


def cpu_per_event(step: Callable[[Any], object], items: list[Any]) -> float:
    """Process CPU µs per item of one pass of `step` over the items (results not kept)."""
    cpu0 = time.process_time()
    deque(map(step, items), maxlen=0)
    return (time.process_time() - cpu0) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (best of each is compared)")
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    ap.add_argument("--es-url", default="http://127.0.0.1:19200")
    ap.add_argument("--batch-size", type=int, default=5000)
    args = ap.parse_args()
    n = args.events
    tag = f"bench{uuid.uuid4().hex[:8]}"
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(
        "ideal pipeline: same consumer and batch size, message bytes as they are into bulk `create` lines, "
        "the next batch read while one is indexed, commit after the bulk is acknowledged; "
        "no decoding, validation, masking or stamping"
    )
    config = bench_config(args, tag, tag)
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

    es = client(config.elasticsearch)
    install_templates(es)  # the same mappings for both: the collector would install them itself
    # The start-up heap frozen, as `paywatch collect` does before its loop, for both pipelines.
    gc.collect()
    gc.freeze()
    results: dict[str, list[tuple[float, float]]] = {"ideal": [], "collector": []}
    streams = []
    for r in range(args.rounds):
        for name, run in (("ideal", ideal), ("collector", collector)):
            namespace = f"{tag}{name[:2]}{r}"
            wall, cpu = run(bench_config(args, tag, namespace), n)
            index = data_stream("paywatch.payment", namespace)
            streams.append(index)
            es.indices.refresh(index=index)
            stored = es.count(index=index)["count"]
            results[name].append((wall, cpu))
            print(
                f"  round {r + 1} {name:9s}: {n / wall:8,.0f} events/s wall, {cpu / n * 1e6:5.2f} µs CPU/event"
                f" (stored {stored} of {n})"
            )
    best = {name: (min(w for w, _ in rs), min(c for _, c in rs)) for name, rs in results.items()}
    (cw, cc), (iw, ic) = best["collector"], best["ideal"]
    print(f"CPU per event: collector {cc / n * 1e6:.2f} µs, ideal pipeline {ic / n * 1e6:.2f} µs: {cc / ic:.2f}×")
    paired = [c / i for (_, c), (_, i) in zip(results["collector"], results["ideal"], strict=True)]
    print(
        f"  round by round (each round's two runs minutes apart): {', '.join(f'{r:.2f}×' for r in paired)}; "
        f"median {statistics.median(paired):.2f}×"
    )
    print(
        f"wall throughput: collector {n / cw:,.0f} events/s, ideal pipeline {n / iw:,.0f} events/s: "
        f"{cw / iw:.2f}× slower"
    )
    print(f"load average {os.getloadavg()[0]:.1f}")

    # Where the collector's extra CPU goes: its pure pipeline, and each step alone, on the same events.
    table = routes(config.kafka.topics, tag, config.collector.max_event_bytes)
    messages = [Message(topic=topic, partition=0, offset=i, value=v) for i, v in enumerate(values)]
    now, limit = datetime.now(UTC), config.collector.max_event_bytes

    def chunked(items: list[Any]) -> list[list[Any]]:
        return [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]

    def native_per_event(items: list[bytes]) -> float:
        batches = chunked(items)
        run = cpu_per_event(lambda batch: _native_lines(batch, [topic] * len(batch), table, now, limit), batches)
        return run * len(batches) / len(items)

    batches = chunked(messages)
    pure = cpu_per_event(lambda batch: build_batch(batch, table, now, limit), batches) * len(batches) / n
    print(f"pure pipeline (decode, validate, mask, encode, bulk line): {pure:.2f} µs CPU/event")
    taken = sum(line is not None for line in _native_lines(values, [topic] * n, table, now, limit))
    cards = [v for v in values if may_contain_pan(v)]
    python_per_card = cpu_per_event(lambda v: table[topic].prepare(v, now), cards)
    print(
        f"  of which: the native fast path {native_per_event(values):.2f} µs per event it reads "
        f"(it takes {taken} of {n}); on the {len(cards)} events with a card number ({len(cards) / n:.1%}) "
        f"{native_per_event(cards):.2f} µs each, their masking by pan.mask_text included, where the Python "
        f"path (decode, checks, card-number policy, encode) costs {python_per_card:.2f} µs"
    )
    intake = Intake()
    events = [intake.decode(v) for v in values]
    for e in events:
        e.event.ingested = now
    steps = {
        "decode with the contract's checks": cpu_per_event(intake.decode, values),
        "card-number pre-scan (may_contain_pan)": cpu_per_event(may_contain_pan, values),
        "encode": cpu_per_event(encode, events),
    }
    alone = ", ".join(f"{name} {us:.2f} µs" for name, us in steps.items())
    print(f"  the Python path's steps, each alone on every event: {alone}")
    print(
        f"the collector's CPU beyond the ideal's: {(cc - ic) / n * 1e6:.2f} µs/event; "
        f"1.3× the ideal leaves {0.3 * ic / n * 1e6:.2f} µs/event for that work"
    )
    ref = cpu_per_event(json.loads, values)
    print(f"machine reference: json.loads of the same events takes {ref:.2f} µs CPU/event")

    for index in streams:
        es.indices.delete_data_stream(name=index)
    AdminClient({"bootstrap.servers": args.bootstrap}).delete_topics([topic, config.kafka.topics.dead_letter])


if __name__ == "__main__":
    main()
