"""Detector figures: replay throughput (events/s on one core) against its own floor, decoding
the same events alone, and memory per in-flight order.

    .venv/bin/python bench/detectors.py [--events 500000] [--open-orders 1000000]

Throughput: realistic payment traffic (orders with 1-2 attempts on mixed channels,
callbacks, customer failures, order_paid) encoded as JSONL, replayed from memory through
decode → DetectionEngine with a tick every simulated second, as `paywatch replay` does.
The floor is decoding the same lines alone (msgspec into the typed contract, with its
checks): replay cannot be cheaper, so replay / decoding is detection's cost made visible.
Memory: tracemalloc delta after feeding one `payment_requested` for each of N orders
that never finish (the state a worker holds during a callback outage), divided by N.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from paywatch.contract import Event, EventMeta, Payment, Service, ServiceInstance, decode, encode
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHANNELS = ["alipay", "wechat", "stripe", "bank_a", "bank_b"]
SERVICE = Service(name="checkout", instance=ServiceInstance(id="checkout-1"))


def _event(n: int, t: float, action: str, order: str, attempt: str | None, channel: str | None, **kw) -> Event:
    outcome = kw.pop("outcome", None)
    return Event(
        timestamp=T0 + timedelta(seconds=t),
        event=EventMeta(id=f"e{n}", dataset="paywatch.payment", action=action, outcome=outcome),
        service=SERVICE,
        payment=Payment(order_id=order, attempt_id=attempt, channel=channel, **kw),
    )


def traffic(count: int, per_s: int = 1000, seed: int = 7) -> list[bytes]:
    """About `count` events of normal traffic at `per_s` orders a second."""
    rng = random.Random(seed)
    events: list[tuple[float, int, Event]] = []
    n = order = 0
    while len(events) < count:
        t = order / per_s
        oid = f"ord-{order:09d}"
        ch = rng.choice(CHANNELS)
        amount = rng.randrange(100, 100_000)
        row = [(t, "order_created", None, {})]
        row.append((t + 0.1, "payment_requested", f"{oid}-1", {"amount_minor": amount, "currency": "CNY"}))
        if rng.random() < 0.05:
            row.append(
                (
                    t + 0.5,
                    "channel_callback",
                    f"{oid}-1",
                    {"outcome": "failure", "error_code": "INSUFFICIENT_FUNDS", "error_category": "user"},
                )
            )
            row.append((t + 5, "payment_requested", f"{oid}-2", {"amount_minor": amount}))
            row.append((t + 6, "channel_callback", f"{oid}-2", {"outcome": "success", "latency_ms": 900}))
        else:
            row.append((t + 1.5, "channel_callback", f"{oid}-1", {"outcome": "success", "latency_ms": 1400}))
        row.append((row[-1][0] + 0.05, "order_paid", None, {}))
        for at, action, attempt, kw in row:
            channel = ch if attempt else None
            events.append((at, n, _event(n, at, action, oid, attempt, channel, **kw)))
            n += 1
        order += 1
    events.sort(key=lambda e: (e[0], e[1]))
    return [encode(e) for _, _, e in events]


def throughput(count: int) -> tuple[int, float, float]:
    """(events, CPU s decoding the lines alone, CPU s replaying them: decode + detection)."""
    lines = traffic(count)
    gc.collect()
    start = time.process_time()
    for line in lines:
        decode(line)
    decoding = time.process_time() - start
    gc.collect()
    start = time.process_time()
    for _ in replay(lines, DetectionEngine()):
        pass
    replaying = time.process_time() - start
    return len(lines), decoding, replaying


def calibration(line: bytes, rounds: int = 100_000) -> float:
    """µs for stdlib json.loads of one event: tells how fast this machine is right now."""
    start = time.process_time()
    for _ in range(rounds):
        json.loads(line)
    return (time.process_time() - start) / rounds * 1e6


def memory_per_order(orders: int) -> float:
    engine = DetectionEngine()
    events = (
        _event(
            i,
            i / 10_000,
            "payment_requested",
            f"ord-{i:09d}",
            f"ord-{i:09d}-1",
            CHANNELS[i % 5],
            amount_minor=12_345,
            currency="CNY",
        )
        for i in range(orders)
    )
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for e in events:
        engine.feed(e)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(engine.orders.orders) == orders
    return used / orders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--open-orders", type=int, default=1_000_000)
    args = ap.parse_args()
    n, decoding, replaying = throughput(args.events)
    print(f"decoding alone (msgspec, typed contract with its checks): {decoding / n * 1e6:.2f} µs CPU/event")
    print(
        f"replay (decode + detection): {replaying / n * 1e6:.2f} µs CPU/event = "
        f"{n / replaying:,.0f} events per CPU-second, one core"
    )
    print(
        f"replay costs {replaying / decoding:.2f}× decoding alone; "
        f"detection is {(replaying - decoding) / replaying:.0%} of the replay"
    )
    print(f"machine calibration: stdlib json.loads of one event takes {calibration(traffic(1)[0]):.1f} µs")
    print(
        f"memory per in-flight order at {args.open_orders:,} open orders: "
        f"{memory_per_order(args.open_orders):,.0f} bytes"
    )


if __name__ == "__main__":
    main()
