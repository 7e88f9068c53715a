"""Alert engine figures: findings/s through `AlertEngine` and memory per open stuck order.

    .venv/bin/python bench/alerts.py [--orders 100000] [--channels 10]

A callback outage at scale: N per-order paid_but_pending findings opened across the
channels (each channel's alert pages at its third order), 100 findings per simulated
second with a tick every simulated second and the default 60 s re-send, then all N
resolved. Also a record-only kind (query_unavailable, never pages) with N open sources
on one channel. Memory: tracemalloc delta with all N orders open, divided by N.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from paywatch.alerts.engine import AlertEngine
from paywatch.alerts.rules import load_rules
from paywatch.finding import FindingPayment, make_finding

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def findings(n: int, channels: int, kind: str, state: str, start: float):
    return [
        make_finding(
            at=T0 + timedelta(seconds=start + i / 100),
            kind=kind,
            state=state,
            fingerprint=f"{kind}|o{i}",
            severity="warning",
            summary=f"order o{i}",
            payment=FindingPayment(order_id=f"o{i}", channel=f"ch{i % channels}"),
        )
        for i in range(n)
    ]


def run(engine: AlertEngine, batch: list) -> tuple[float, int]:
    t = time.perf_counter()
    changes = 0
    for i, finding in enumerate(batch):
        changes += len(engine.on_finding(finding))
        if i % 100 == 99:
            changes += len(engine.tick(finding.timestamp))
    return len(batch) / (time.perf_counter() - t), changes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--channels", type=int, default=10)
    args = parser.parse_args()
    n = args.orders
    rules = load_rules()

    opened = findings(n, args.channels, "paid_but_pending", "open", 0)
    resolved = findings(n, args.channels, "paid_but_pending", "resolved", 3600)
    engine = AlertEngine(rules, resend_interval=timedelta(seconds=60))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rate_open, changes_open = run(engine, opened)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rate_resolve, changes_resolve = run(engine, resolved)
    print(f"open    {n} stuck orders on {args.channels} channels: {rate_open:,.0f} findings/s ({changes_open} changes)")
    print(f"resolve {n} stuck orders: {rate_resolve:,.0f} findings/s ({changes_resolve} changes)")
    print(f"memory  {held / n:,.0f} bytes per open order (alert state, all channels)")

    record_only = findings(n, 1, "query_unavailable", "open", 0)
    rate_record, _ = run(AlertEngine(rules), record_only)
    print(f"record-only kind, {n} open on one channel: {rate_record:,.0f} findings/s")


if __name__ == "__main__":
    main()
