"""Runs the compensator's due queries against the channels, never harder than each channel's
budget allows: one dispatcher per channel takes queries in order and starts each only when
the token bucket, the concurrency cap, any Retry-After pause and the circuit breaker agree.
A burst of 10,000 stuck orders therefore becomes a queue, not a flood.

Also delivers repair/refund actions to the order system's webhook (signed like every
paywatch webhook), unless in dry-run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import structlog

from paywatch.compensation.audit import ORDER_SYSTEM_ACTIONS
from paywatch.compensation.budget import ChannelBudget
from paywatch.compensation.channels import ChannelAdapter, QueryRequest, QueryResult
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.settings import CompensationSettings, OrderWebhookSettings
from paywatch.secrets import read_secret
from paywatch.webhooks import TIMESTAMP_HEADER, Retry, post_json, signature_headers

log = structlog.get_logger("paywatch.compensation")


@dataclass
class _Lane:
    adapter: ChannelAdapter
    budget: ChannelBudget
    queue: asyncio.Queue[QueryRequest] = field(default_factory=asyncio.Queue)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    dispatcher: asyncio.Task[None] | None = None


class Executor:
    """`submit` queries, `await result()` for each answer (in completion order). The clock and
    sleep are injectable so a test can run a 10,000-query burst in virtual time."""

    def __init__(
        self,
        adapters: dict[str, ChannelAdapter],
        settings: CompensationSettings,
        client: httpx.AsyncClient | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._now = monotonic
        self._sleep = sleep
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._lanes = {
            name: _Lane(adapter, ChannelBudget(settings.budget_for(name), monotonic()))
            for name, adapter in adapters.items()
        }
        self._results: asyncio.Queue[QueryResult] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self.outstanding = 0

    def submit(self, request: QueryRequest) -> None:
        lane = self._lanes[request.channel]
        if lane.dispatcher is None:
            lane.dispatcher = asyncio.create_task(self._dispatch(request.channel, lane))
        lane.queue.put_nowait(request)
        self.outstanding += 1

    async def result(self) -> QueryResult:
        result = await self._results.get()
        self.outstanding -= 1
        return result

    def circuit(self, channel: str) -> str:
        return self._lanes[channel].budget.breaker.state

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            if lane.dispatcher is not None:
                lane.dispatcher.cancel()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    async def _dispatch(self, channel: str, lane: _Lane) -> None:
        while True:
            request = await lane.queue.get()
            while (wait := lane.budget.wait(self._now())) != 0:
                if wait is None:
                    lane.released.clear()
                    await lane.released.wait()
                else:
                    await self._sleep(wait)
            lane.budget.start(self._now())
            task = asyncio.create_task(self._run(channel, lane, request))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, channel: str, lane: _Lane, request: QueryRequest) -> None:
        try:
            result = await lane.adapter.query(self._client, request)
        except Exception as exc:  # an adapter bug must not kill the lane; it counts as a failed query
            result = QueryResult(request, "unknown", api_failed=True, error=f"{type(exc).__name__}: {exc}"[:300])
        change = lane.budget.finish(
            self._now(), api_failed=result.api_failed, throttled=result.throttled, retry_after_s=result.retry_after_s
        )
        if change is not None:
            log.warning("circuit_" + change, channel=channel, error=result.error)
        if result.throttled:
            log.info("channel_throttled", channel=channel, retry_after_s=result.retry_after_s)
        lane.released.set()
        self._results.put_nowait(result)


async def run_due(compensator: Compensator, executor: Executor, now: datetime) -> Effects:
    """Send every query due at `now` and wait for all their answers, on the caller's loop (tests
    and benches; both backends run `CompensationDriver`, which never waits)."""
    for request in compensator.due(now):
        executor.submit(request)
    effects = Effects()
    while executor.outstanding:
        effects += compensator.on_result(await executor.result(), now)
    return effects


class OrderWebhook:
    """POSTs repair and refund actions to the order system, HMAC-signed, with the shared retry policy."""

    def __init__(self, settings: OrderWebhookSettings, client: httpx.Client | None = None) -> None:
        if settings.url is None:
            raise ValueError("order_webhook.url is not set")
        self.url = settings.url
        self._secret = read_secret(settings.secret_env, settings.secret_file) or ""
        if not self._secret and not settings.allow_unsigned:
            raise ValueError(
                f"compensation.order_webhook.url is set but no signing key: set ${settings.secret_env} or "
                "compensation.order_webhook.secret_file (or allow_unsigned: true to send repairs unsigned)"
            )
        self._retry = Retry(max_attempts=settings.retries + 1, timeout_s=settings.timeout_s)
        self._client = client or httpx.Client(timeout=settings.timeout_s)

    async def deliver(self, action: dict) -> bool:
        """True once the order system accepted it; never raises. The blocking POST (and its
        backoff) runs in a worker thread, so the channel queries on this loop go on meanwhile."""
        if action["action"]["type"] not in ORDER_SYSTEM_ACTIONS or action["action"].get("dry_run"):
            return False
        body = json.dumps(action, separators=(",", ":")).encode()
        posted = await asyncio.to_thread(
            post_json, self._client, self.url, body, self._retry, target="order_webhook", headers=self._headers
        )
        return posted.ok

    def _headers(self, body: bytes) -> dict[str, str]:
        stamp = int(time.time())
        return signature_headers(self._secret, stamp, body) if self._secret else {TIMESTAMP_HEADER: str(stamp)}

    async def aclose(self) -> None:
        self._client.close()
