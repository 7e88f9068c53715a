"""A burst of stuck orders against a fake Stripe query API over real loopback sockets:
prints how long the queue took, the achieved rate and the peak requests the channel saw in
any one-second window (must stay <= --qps).

    .venv/bin/python bench/compensation_burst.py --orders 2000 --qps 200 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime

from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.engine import Compensator
from paywatch.compensation.executor import Executor, run_due
from paywatch.compensation.settings import BudgetSettings, ChannelQuerySettings, CompensationSettings
from paywatch.finding import FindingPayment, make_finding
from paywatch.simulator.channel_api import ChannelApiServer
from paywatch.simulator.truth import ChannelRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--qps", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    os.environ["PAYWATCH_STRIPE_SECRET_KEY"] = "sk_test_bench"
    truth = {
        f"pi_{i}": ChannelRecord("stripe", f"o{i}", f"pi_{i}", 1000, "USD", NOW, "paid", paid_at=NOW)
        for i in range(args.orders)
    }
    server = ChannelApiServer("stripe", truth.get, secret_key="sk_test_bench").start()
    settings = CompensationSettings(
        channels={"stripe": ChannelQuerySettings(adapter="stripe", base_url=server.url)},
        budget=BudgetSettings(qps=args.qps, concurrency=args.concurrency),
    )
    comp = Compensator(settings)
    for i in range(args.orders):
        comp.on_finding(
            make_finding(
                at=NOW,
                kind="unknown_attempt",
                state="open",
                fingerprint=f"u{i}",
                severity="info",
                summary="",
                payment=FindingPayment(order_id=f"o{i}", attempt_id=f"pi_{i}", channel="stripe"),
            )
        )

    async def go() -> int:
        executor = Executor(build_adapters(settings), settings)
        try:
            return len((await run_due(comp, executor, NOW)).events)
        finally:
            await executor.aclose()

    started = time.perf_counter()
    answered = asyncio.run(go())
    took = time.perf_counter() - started
    server.stop()
    print(f"orders={args.orders} qps_limit={args.qps:g} concurrency={args.concurrency}")
    print(f"answered={answered} wall_s={took:.1f} achieved_qps={args.orders / took:.1f}")
    print(f"peak_requests_in_any_1s_window_at_server={server.max_in_window(1.0)}")


if __name__ == "__main__":
    main()
