"""The compensator on Kafka: the shared stage loop (`paywatch.stage.Stage`) feeds it
findings (paywatch.findings) and payment events (payments.events); every tick it sends the
due queries to the async executor, which runs on its own event-loop thread so the Kafka
loop never waits on a channel, and publishes what the answers produced:
`channel_query_result` events to payments.events, audit/repair/refund documents to
paywatch.actions, give-up and unavailable findings to paywatch.findings, and its own
heartbeat to paywatch.heartbeats. Repair and refund actions also go to the order system's
webhook when one is configured (never in dry-run).

Pending queries live in memory: a restart resumes after the committed offsets and loses them
(docs/compensation.md says how to rebuild them with a fresh consumer group).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import threading
from collections.abc import Iterable
from datetime import datetime

import structlog
from confluent_kafka import Message

from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.channels import QueryResult
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.executor import Executor, OrderWebhook
from paywatch.compensation.settings import CompensationConfig, CompensationSettings
from paywatch.contract import HEARTBEAT, ContractError, Event, EventMeta, Heartbeat, encode
from paywatch.finding import decode_finding, encode_finding
from paywatch.ids import stable_id
from paywatch.intake import Intake
from paywatch.kafka import ensure_topics
from paywatch.stage import Handler, Output, Stage, stop_on_signals

log = structlog.get_logger("paywatch.compensation")


class AsyncSide:
    """The executor and webhook on a private event-loop thread; thread-safe `submit` of due
    queries and `ready()` collection of answers, so a synchronous loop (this Kafka stage, the
    embedded backend's tick) never waits on a channel, however long the queue."""

    def __init__(self, settings: CompensationSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="compensation-io", daemon=True)
        self._thread.start()
        self._done: queue.Queue[QueryResult] = queue.Queue()
        adapters = build_adapters(settings)

        async def start() -> tuple[Executor, OrderWebhook | None]:
            executor = Executor(adapters, settings)
            webhook = OrderWebhook(settings.order_webhook) if settings.order_webhook.url else None
            return executor, webhook

        self.executor, self.webhook = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self._pump = asyncio.run_coroutine_threadsafe(self._collect(), self.loop)

    async def _collect(self) -> None:
        while True:
            self._done.put(await self.executor.result())

    def submit(self, requests: Iterable) -> None:
        for request in requests:
            self.loop.call_soon_threadsafe(self.executor.submit, request)

    def ready(self) -> list[QueryResult]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def deliver(self, actions: list[dict]) -> None:
        if self.webhook is not None:
            for action in actions:
                asyncio.run_coroutine_threadsafe(self.webhook.deliver(action), self.loop)

    def close(self) -> None:
        async def stop() -> None:
            self._pump.cancel()
            await self.executor.aclose()
            if self.webhook is not None:
                await self.webhook.aclose()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)


class CompensationHandler(Handler):
    """The stage handler: Kafka messages in, outputs of the pure compensator out."""

    def __init__(self, config: CompensationConfig, io: AsyncSide, instance_id: str) -> None:
        self.config = config
        self.topics = config.kafka.topics
        self.compensator = Compensator(config.compensation, instance_id)
        self.intake = Intake(config.intake)
        self.io = io
        self._seq = 0
        self._next_beat = 0.0

    def handle(self, message: Message) -> Iterable[Output]:
        raw = message.value() or b""
        try:
            if message.topic() == self.topics.findings:
                effects = self.compensator.on_finding(decode_finding(raw))
            else:
                effects = self.compensator.on_event(self.intake.decode(raw))
        except ContractError as exc:  # the collector dead-letters bad input; here it is just skipped
            log.warning("skipped_bad_message", topic=message.topic(), offset=message.offset(), reason=str(exc))
            return []
        return self._outputs(effects)

    def tick(self, now: datetime) -> Iterable[Output]:
        self.io.submit(self.compensator.due(now))
        effects = Effects()
        for result in self.io.ready():
            effects += self.compensator.on_result(result, now)
        outputs = self._outputs(effects)
        if now.timestamp() >= self._next_beat:
            self._next_beat = now.timestamp() + self.config.compensation.heartbeat_interval_s
            outputs.append(self._heartbeat(now))
        return outputs

    def _outputs(self, effects: Effects) -> list[Output]:
        t = self.topics
        out = [Output(t.payments, e.key.encode(), encode(e)) for e in effects.events]
        out += [Output(t.actions, a["payment"]["order_id"].encode(), json.dumps(a).encode()) for a in effects.actions]
        out += [
            Output(t.findings, (f.payment.order_id if f.payment else f.finding.fingerprint).encode(), encode_finding(f))
            for f in effects.findings
        ]
        self.io.deliver(effects.actions)
        return out

    def _heartbeat(self, now: datetime) -> Output:
        self._seq += 1
        service = self.compensator.service
        beat = Event(
            timestamp=now,
            event=EventMeta(
                id=stable_id("heartbeat", service.name, service.instance.id, now.isoformat()), dataset=HEARTBEAT
            ),
            service=service,
            heartbeat=Heartbeat(
                interval_s=self.config.compensation.heartbeat_interval_s,
                seq=self._seq,
                status="up",
                checks={
                    f"circuit:{ch}": "ok" if self.io.executor.circuit(ch) == "closed" else "fail"
                    for ch in self.config.compensation.channels
                    if self.config.compensation.queryable(ch)
                },
            ),
        )
        return Output(self.topics.heartbeats, service.name.encode(), encode(beat))


def run(config: CompensationConfig, instance: str | None = None) -> None:
    """Run until SIGINT/SIGTERM; the last outputs are flushed and committed before exit."""
    instance_id = instance or f"{socket.gethostname()}-{os.getpid()}"
    t = config.kafka.topics
    ensure_topics(config.kafka, [t.findings, t.payments, t.actions, t.heartbeats])
    io = AsyncSide(config.compensation)
    handler = CompensationHandler(config, io, instance_id)
    stage = Stage(
        config.kafka,
        config.compensation.consumer_group,
        [config.kafka.topics.findings, config.kafka.topics.payments],
        handler,
        tick_s=1.0,
    )
    log.info(
        "compensator_started",
        instance=instance_id,
        dry_run=config.compensation.dry_run,
        channels=sorted(config.compensation.channels),
    )
    stop_on_signals(stage.stop)
    try:
        stage.run()
    finally:
        io.close()
    log.info("compensator_stopped", instance=instance_id)
