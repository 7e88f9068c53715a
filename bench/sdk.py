"""Emitter SDK figures: the SDK side by side with a raw producer, and how long `log.payment(...)`
takes the caller with Kafka up and with every broker down.

    .venv/bin/python bench/sdk.py [--events 50000] [--rounds 2] [--bootstrap 127.0.0.1:19092]

Side by side (the floor): the same events, to the same Kafka, from one thread, by the SDK and
by a raw producer that builds the same ECS document as a dict (same fields, same service, same
key), msgspec-encodes it and calls `Producer.produce`, with the same producer settings
(`paywatch.kafka.producer_config`: idempotent, acks=all, linger.ms 20, lz4, default batch.size;
the SDK's transport adds only how failures are reported: `delivery.report.only.error`, its
`message.timeout.ms`, an error callback). The raw producer validates and masks nothing.
Compared: the caller's CPU per event (its own thread's CPU time), and the delivered rate
(events acknowledged by Kafka per second of wall clock, from the first call to the last
acknowledgement). Not hidden: the SDK's drain thread's CPU per event, and each side's process
CPU per event (every thread: caller, drain, librdkafka), are printed beside them. The two
alternate `--rounds` times; each figure is the best of its rounds, so a burst of load
elsewhere on the machine hurts neither.

Kafka up uses the local dev broker (started, or reused if already running); Kafka down is a
bootstrap address where nothing listens, which is what "all brokers down" looks like to the
producer. Latencies are wall time per call. Calls during which the OS preempted the thread
(an involuntary context switch: the machine was busy elsewhere) are shown separately,
because on a loaded machine they, not the SDK, set the tail.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from concurrent import futures
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from paywatch.app.config import Config
from paywatch.collectors.sdk import PaymentLogger, new_event_id, open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.devstack import KafkaServer, free_port
from paywatch.kafka import ensure_topics, producer_config
from paywatch.settings import KafkaSettings, Topics


def emit_one(log: PaymentLogger, i: int) -> None:
    log.payment(
        "payment_requested",
        order_id=f"order-{i // 3}",
        attempt_id=f"attempt-{i}",
        channel="alipay",
        method="wallet",
        merchant_id="m-42",
        amount_minor=1250 + i % 100,
        currency="CNY",
        outcome="unknown",
        latency_ms=38,
    )


def same_service(name: str) -> dict:
    """The service section the SDK writes (open_logger's default instance id), for both sides."""
    return {"name": name, "instance": {"id": f"{socket.gethostname()}:{os.getpid()}"}}


def raw_document(i: int, service: dict) -> dict:
    """The document `emit_one` makes the SDK build, built directly as a dict."""
    now = datetime.now(UTC)
    return {
        "@timestamp": now.replace(microsecond=now.microsecond // 1000 * 1000),
        "event": {
            "id": new_event_id(),
            "dataset": "paywatch.payment",
            "action": "payment_requested",
            "outcome": "unknown",
        },
        "service": service,
        "payment": {
            "order_id": f"order-{i // 3}",
            "attempt_id": f"attempt-{i}",
            "channel": "alipay",
            "method": "wallet",
            "merchant_id": "m-42",
            "amount_minor": 1250 + i % 100,
            "currency": "CNY",
            "latency_ms": 38,
        },
    }


def topics_for(label: str) -> Topics:
    run_id = uuid.uuid4().hex[:8]
    return Topics(
        payments=f"bench-sdk-{label}-{run_id}.payments",
        heartbeats=f"bench-sdk-{run_id}.hb",
        logs=f"bench-sdk-{run_id}.logs",
    )


Round = tuple[float, float, float, float]  # caller CPU µs/event, drain thread µs/event, process µs/event, events/s


def raw_round(kafka: KafkaSettings, n: int) -> Round:
    """The raw producer's figures (it has no drain thread)."""
    topic = kafka.topics.payments
    producer = Producer(producer_config(kafka))
    encode = msgspec.json.Encoder().encode
    service = same_service("bench-sdk")
    producer.produce(topic, encode(raw_document(-1, service)), "warm-up")
    producer.flush(30)
    wall0, cpu0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
    for i in range(n):
        value = encode(raw_document(i, service))
        while True:
            try:
                producer.produce(topic, value, f"order-{i // 3}")
                break
            except BufferError:
                producer.poll(0.01)
    cpu = time.thread_time() - cpu0
    assert producer.flush(300) == 0, "raw producer: not every event was delivered"
    rate = n / (time.perf_counter() - wall0)
    return cpu / n * 1e6, 0.0, (time.process_time() - process0) / n * 1e6, rate


def sdk_round(kafka: KafkaSettings, n: int, spool: Path) -> Round:
    """The SDK's figures; the drain thread's CPU is read from its own clock."""
    config = Config(kafka=kafka, sdk=SdkSettings(transport="kafka", spill_dir=spool, buffer_events=max(20_000, n)))
    log = open_logger("bench-sdk", config=config, heartbeat=False)
    emit_one(log, -1)
    log.flush(30)
    drain = time.pthread_getcpuclockid(log._logger._thread.ident)  # type: ignore[arg-type]
    wall0, cpu0, process0, drain0 = (
        time.perf_counter(),
        time.thread_time(),
        time.process_time(),
        time.clock_gettime(drain),
    )
    for i in range(n):
        emit_one(log, i)
    cpu = time.thread_time() - cpu0
    assert log.flush(300), "SDK: not every event was delivered"
    rate = n / (time.perf_counter() - wall0)
    drain_cpu, process_cpu = time.clock_gettime(drain) - drain0, time.process_time() - process0
    stats = log.stats()
    log.close(timeout=10)
    assert stats["sent"] == n + 1 and stats["dropped"] == 0, stats
    return cpu / n * 1e6, drain_cpu / n * 1e6, process_cpu / n * 1e6, rate


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """The shared broker keeps no topic of a run. The deletion is waited for: the admin
    client is asynchronous: it is kept until its answer has come, or the request is dropped."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures.wait(admin.delete_topics(names).values(), timeout=30)


def side_by_side(bootstrap: str, n: int, rounds: int, spool: Path) -> None:
    raw: list[Round] = []
    sdk: list[Round] = []
    made: list[str] = []
    for r in range(rounds):
        for label, results in (("raw", raw), ("sdk", sdk)):
            kafka = KafkaSettings(bootstrap_servers=bootstrap, topics=topics_for(label))
            ensure_topics(kafka, [kafka.topics.payments])
            made.append(kafka.topics.payments)
            if label == "raw":
                results.append(raw_round(kafka, n))
            else:
                results.append(sdk_round(kafka, n, spool / f"sdk-{r}"))
            cpu, drain, process, rate = results[-1]
            print(
                f"  round {r + 1} {label}: caller {cpu:5.2f} µs CPU/event, drain thread {drain:5.2f}, "
                f"process {process:5.2f}; delivered {rate:9,.0f} events/s"
            )
    raw_cpu, raw_process, raw_rate = min(x[0] for x in raw), min(x[2] for x in raw), max(x[3] for x in raw)
    sdk_cpu, sdk_process, sdk_rate = min(x[0] for x in sdk), min(x[2] for x in sdk), max(x[3] for x in sdk)
    sdk_drain = min(x[1] for x in sdk)
    print("same document, key and producer settings; alternating rounds, best round of each side:")
    print(f"caller CPU per event: SDK {sdk_cpu:.2f} µs, raw producer {raw_cpu:.2f} µs: {sdk_cpu / raw_cpu:.2f}×")
    print(
        f"process CPU per event (all threads): SDK {sdk_process:.2f} µs (its drain thread {sdk_drain:.2f} µs), "
        f"raw producer {raw_process:.2f} µs: {sdk_process / raw_process:.2f}×"
    )
    print(
        f"delivered to Kafka: SDK {sdk_rate:,.0f} events/s, raw producer {raw_rate:,.0f} events/s: "
        f"{raw_rate / sdk_rate:.2f}× fewer"
    )
    paired = [r[3] / s[3] for r, s in zip(raw, sdk, strict=True)]
    print(
        f"  round by round (each round's two runs seconds apart): {', '.join(f'{x:.2f}×' for x in paired)} fewer; "
        f"median {statistics.median(paired):.2f}×"
    )
    delete_topics(bootstrap, made)


def measure(log: PaymentLogger, n: int) -> tuple[list[float], list[float], float]:
    """(all call latencies µs, un-preempted ones µs, calls per second)."""
    every, clean = [], []
    started = time.perf_counter()
    for i in range(n):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        t = time.perf_counter_ns()
        emit_one(log, i)
        took = (time.perf_counter_ns() - t) / 1e3
        every.append(took)
        if resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw == before:
            clean.append(took)
    return every, clean, n / (time.perf_counter() - started)


def describe(values: list[float]) -> str:
    q = statistics.quantiles(values, n=1000)
    return f"p50 {q[499]:7.1f} µs  p99 {q[989]:7.1f} µs  p99.9 {q[998]:8.1f} µs  max {max(values):8.1f} µs"


def run(label: str, bootstrap: str, n: int, spool: Path) -> PaymentLogger:
    topics = topics_for(label)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topics=topics)
    if label == "up":
        ensure_topics(kafka, [topics.payments, topics.heartbeats, topics.logs])
    config = Config(kafka=kafka, sdk=SdkSettings(transport="kafka", spill_dir=spool, buffer_events=max(20_000, n)))
    log = open_logger(f"bench-{label}", config=config, heartbeat=False)
    emit_one(log, -1)  # warm-up: first-call imports and connection set-up are not what is measured
    if label == "up":
        log.flush(30)
    else:  # the drain thread takes the warm-up event alone into librdkafka; the measured ones will spill
        while log.stats()["buffer_events"]:
            time.sleep(0.005)
    started = time.perf_counter()
    every, clean, rate = measure(log, n)
    print(f"Kafka {label:4s} {n} calls, {rate:9,.0f} calls/s from one thread")
    print(f"  un-preempted ({len(clean) / n:6.1%}): {describe(clean)}")
    print(f"  all calls:              {describe(every)}")
    if label == "up":
        log.flush(300)
        took = time.perf_counter() - started
        stats = log.stats()
        print(f"  delivered to Kafka: {stats['sent']} events in {took:.2f} s = {stats['sent'] / took:,.0f} events/s")
    else:
        deadline = time.monotonic() + 120
        # the warm-up event stays with librdkafka (delivery_timeout_s); the measured ones go to disk
        while (stats := log.stats())["spilled"] < n and time.monotonic() < deadline:
            time.sleep(0.1)
        print(f"  spilled to disk: {stats['spilled']} events, {stats['spill_bytes'] / n:.0f} bytes/event")
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds (best of each is compared)")
    parser.add_argument("--bootstrap", default=None, help="Kafka to use for 'up' (default: the dev broker)")
    args = parser.parse_args()
    load1, _, _ = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load1:.1f}")
    bootstrap = args.bootstrap or KafkaServer().start().bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        print(f"side by side, {args.events} events per round, Kafka at {bootstrap}:")
        side_by_side(bootstrap, args.events, args.rounds, Path(tmp))
        print(f"load average {os.getloadavg()[0]:.1f}")
        down = run("down", f"127.0.0.1:{free_port()}", args.events, Path(tmp) / "down")
        up = run("up", bootstrap, args.events, Path(tmp) / "up")
        down.close(timeout=0)
        up.close(timeout=10)
        delete_topics(bootstrap, sorted(set(up._logger.topics.values())))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
