"""The compensation stage as both backends run it: the pure `Compensator` with its I/O.

`CompensationDriver` is fed findings, payment events and clock ticks, and returns what the
compensator produced (`Effects`); the backends differ only in how those arrive and leave —
Kafka topics for `paywatch compensate`, the embedded pipeline's queue for `run --embedded`.
Channel queries and the order webhook run on a private event-loop thread (`AsyncSide`), so
the caller never waits on a channel or the order system, however slow or hung they are: a
tick submits the queries due and collects the answers that have arrived since the last one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import structlog

from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.channels import QueryRequest, QueryResult
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.executor import Executor, OrderWebhook
from paywatch.compensation.settings import CompensationSettings
from paywatch.contract import Event, Service
from paywatch.finding import Finding

log = structlog.get_logger("paywatch.compensation")


class AsyncSide:
    """The executor and the order webhook on a private event-loop thread: thread-safe `submit` of
    due queries and `ready()` collection of answers."""

    def __init__(self, settings: CompensationSettings) -> None:
        adapters = build_adapters(settings)
        # Built before the thread starts: an unsigned webhook refuses here, in the caller's thread.
        self.webhook = OrderWebhook(settings.order_webhook) if settings.order_webhook.url else None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="compensation-io", daemon=True)
        self._thread.start()
        self._done: queue.Queue[QueryResult] = queue.Queue()

        async def start() -> Executor:
            return Executor(adapters, settings)

        self.executor = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self._pump = asyncio.run_coroutine_threadsafe(self._collect(), self.loop)
        self.outstanding = 0  # queries submitted whose answer has not been collected
        self.last_answer = time.monotonic()  # when an answer was last collected (or we started)
        self._deliveries: set[Future[bool]] = set()

    async def _collect(self) -> None:
        while True:
            self._done.put(await self.executor.result())

    def submit(self, requests: Iterable[QueryRequest]) -> None:
        for request in requests:
            if not self.outstanding:
                self.last_answer = time.monotonic()  # idle until now is not being stuck
            self.outstanding += 1
            self.loop.call_soon_threadsafe(self.executor.submit, request)

    def ready(self, wait_s: float = 0.0) -> list[QueryResult]:
        """The answers that arrived; with `wait_s`, waits up to that long for every outstanding one
        (simulated time, where a tick stands for a whole second of the channels' time)."""
        out = []
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if wait_s and self.outstanding > len(out):
                    out.append(self._done.get(timeout=max(deadline - time.monotonic(), 0.001)))
                else:
                    out.append(self._done.get_nowait())
            except queue.Empty:
                break
        if out:
            self.outstanding -= len(out)
            self.last_answer = time.monotonic()
        return out

    def deliver(self, actions: list[dict[str, Any]]) -> None:
        if self.webhook is None:
            return
        for action in actions:
            future = asyncio.run_coroutine_threadsafe(self.webhook.deliver(action), self.loop)
            self._deliveries.add(future)
            future.add_done_callback(self._deliveries.discard)

    @property
    def undelivered(self) -> int:
        """Order-webhook deliveries still being attempted."""
        return len(self._deliveries)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop within `timeout_s`: queries in flight are abandoned (the compensator asks again after
        a restart), webhook deliveries get what is left of the time."""

        async def stop() -> None:
            self._pump.cancel()
            await self.executor.aclose()
            pending = [asyncio.wrap_future(f) for f in list(self._deliveries)]
            if pending:
                await asyncio.wait(pending, timeout=timeout_s / 2)
            if self.webhook is not None:
                await self.webhook.aclose()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=timeout_s)
        except TimeoutError:
            log.warning("compensation_stop_timed_out", undelivered=self.undelivered, outstanding=self.outstanding)
        self.loop.call_soon_threadsafe(self.loop.stop)


class CompensationDriver:
    """The one compensation stage: findings, payment events and ticks in, `Effects` out, with
    repairs and refunds pushed to the order webhook (when configured, never in dry-run)."""

    def __init__(self, settings: CompensationSettings, instance_id: str, wait_s: float = 0.0) -> None:
        self.settings = settings
        self.compensator = Compensator(settings, instance_id)
        self.io = AsyncSide(settings)
        self.wait_s = wait_s  # > 0 in simulated time: a tick waits for the answers of its queries

    @property
    def service(self) -> Service:
        return self.compensator.service

    def on_finding(self, finding: Finding) -> Effects:
        return self._out(self.compensator.on_finding(finding))

    def on_event(self, event: Event) -> Effects:
        return self._out(self.compensator.on_event(event))

    def rebuild(self, finding: Finding) -> None:
        """A finding read again after a restart: its attempts are scheduled again (due at once, at
        the finding's time), so a query lost with the old process is asked again; what the finding
        produced then (audit, refund candidates, findings) was published then and is not produced twice."""
        self.compensator.on_finding(finding)

    def hand_over(self, orders: Callable[[str], bool]) -> None:
        """Forget the orders another compensator now owns (see `Compensator.hand_over`)."""
        self.compensator.hand_over(orders)

    def tick(self, now: datetime, send: bool = True) -> Effects:
        """Send the queries due at `now` (unless `send` is False: a rebuild is still reading);
        what the answers that arrived meanwhile produced."""
        if send:
            self.io.submit(self.compensator.due(now))
        effects = Effects()
        for result in self.io.ready(self.wait_s):
            effects += self.compensator.on_result(result, now)
        return self._out(effects)

    def _out(self, effects: Effects) -> Effects:
        self.io.deliver(effects.actions)
        return effects

    def checks(self) -> dict[str, bool]:
        """The heartbeat's checks: each queryable channel's circuit breaker."""
        return {
            f"circuit:{ch}": self.io.executor.circuit(ch) == "closed"
            for ch in self.settings.channels
            if self.settings.queryable(ch)
        }

    def stuck(self, now_monotonic: float, after_s: float) -> bool:
        """Queries outstanding and no answer for `after_s`: a channel (or the loop) is not answering."""
        return self.io.outstanding > 0 and now_monotonic - self.io.last_answer > after_s

    def close(self, timeout_s: float = 10.0) -> None:
        self.io.close(timeout_s)
