"""Emitter SDK figures: how long `log.payment(...)` takes the caller with Kafka up and with every
broker down, and how many events per second one caller thread emits and Kafka receives.

    .venv/bin/python bench/sdk.py [--events 50000] [--bootstrap 127.0.0.1:19092]

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
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from paywatch.collectors.sdk import PaymentLogger, open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.config import Config, KafkaSettings, Topics
from paywatch.devstack import KafkaServer, free_port
from paywatch.kafka import ensure_topics


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
    run_id = uuid.uuid4().hex[:8]
    topics = Topics(
        payments=f"bench-sdk-{run_id}.payments", heartbeats=f"bench-sdk-{run_id}.hb", logs=f"bench-sdk-{run_id}.logs"
    )
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topics=topics)
    if label == "up":
        ensure_topics(kafka, [topics.payments, topics.heartbeats, topics.logs])
    config = Config(kafka=kafka, sdk=SdkSettings(spill_dir=spool, buffer_events=max(20_000, n)))
    log = open_logger(f"bench-{label}", config=config, heartbeat=False)
    emit_one(log, -1)  # warm-up: first-call imports and connection set-up are not what is measured
    if label == "up":
        log.flush(30)
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
    parser.add_argument("--bootstrap", default=None, help="Kafka to use for 'up' (default: the dev broker)")
    args = parser.parse_args()
    load1, _, _ = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load1:.1f}")
    bootstrap = args.bootstrap or KafkaServer().start().bootstrap
    with tempfile.TemporaryDirectory() as tmp:
        down = run("down", f"127.0.0.1:{free_port()}", args.events, Path(tmp) / "down")
        up = run("up", bootstrap, args.events, Path(tmp) / "up")
        down.close(timeout=0)
        up.close(timeout=10)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
