"""`paywatch detect`: the detection core on Kafka, scaled out over partitions.

Two consumer groups run in each worker process:

- **Partition workers** (group `<group>`, topics payments.events + paywatch.heartbeats).
  Per-order state lives with the partition that owns the order (key = order id); the
  heartbeat table of a service with the partition that owns the service. Each payment
  partition closes its own windows and publishes them as *partials* to
  paywatch.channel-partials: one message per (source partition, window) to every
  partials partition, holding the channels that partition owns (empty ones too, so the
  aggregator knows the source is done with the window).
- **Channel aggregator** (group `<group>-channels`, topic paywatch.channel-partials). A
  window is judged once every payment partition has reported it; the sum equals what one
  worker would have counted, so channel findings are the same with 1 or N workers.

Each partition has its own clock (`Timebase`): the watermark of its producers while messages
flow (a consumer that lags cannot tell a backlog from live traffic by its own clock), never
ahead of the wall clock (minus `allowed_lateness_s` for payments), and that wall clock once
it is caught up and idle. Events are judged at their `@timestamp` when it agrees with that
clock, so window contents stay a function of the partition's events, not of which worker read
them, and one producer's clock ahead or behind changes nothing for the others.

Restart and rebalance: a worker that gains a partition re-reads it from
`rebuild_horizon_s` ago (offsets-for-times) and re-derives its state. Findings are
deterministic (fingerprint, state, level and event time give the `event.id`), so before
re-deriving, the worker reads back the ids already on paywatch.findings for that horizon
and does not publish them again.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterable
from datetime import datetime

from confluent_kafka import Consumer, Message, TopicPartition

from paywatch.clock import SystemClock
from paywatch.collectors.heartbeat import ProcessHeartbeat
from paywatch.contract import (
    ContractError,
    Event,
    Service,
    ServiceInstance,
    encode,
)
from paywatch.detectors.channel_feed import ChannelBoard, ChannelStatus, encode_status
from paywatch.detectors.channel_health import ChannelJudge
from paywatch.detectors.engine import window_counter
from paywatch.detectors.heartbeats import HeartbeatTable
from paywatch.detectors.orders import OrderTracker
from paywatch.detectors.settings import DetectorsConfig
from paywatch.detectors.timebase import Ticker, Timebase, to_ms
from paywatch.detectors.windows import OVERALL, Tally, Window, overall
from paywatch.finding import Finding, decode_finding, encode_finding
from paywatch.intake import Intake
from paywatch.kafka import (
    consumer_config,
    end_offset,
    ensure_compacted,
    ensure_topics,
    key_partition,
    retrying,
    start_offsets,
)
from paywatch.stage import Handler, Output, Stage, stop_on_signals

log = logging.getLogger("paywatch.detect")

SERVICE = "paywatch-detect"


def partials_partition(channel: str, partitions: int) -> int:
    """Which partials partition (so which aggregator) owns a channel (and its channel/method keys)."""
    return key_partition(channel.split("/", 1)[0], partitions)


def read_emitted(config: DetectorsConfig, since_ms: int, group_id: str) -> set[str]:
    """Ids of the findings already published since `since_ms` (read back from the findings topic)."""
    topic = config.kafka.topics.findings
    consumer = Consumer(consumer_config(config.kafka, group_id + "-readback", **{"enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        starts = retrying(
            lambda: consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in meta.partitions], timeout=10
            )
        )
        ends = {p: end_offset(consumer, topic, p) for p in meta.partitions}
        todo = {tp.partition for tp in starts if tp.offset >= 0 and tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in todo])
        ids: set[str] = set()
        while todo:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error() is None:
                ids.add(decode_finding(msg.value()).event.id)
            if msg.error() is not None or msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return ids
    finally:
        consumer.close()


class _Clocked:
    """A partition's clock: its producers' watermark while reading (never ahead of the wall clock
    minus `lag_ms`), the wall clock (minus `lag_ms`) once caught up and idle."""

    def __init__(self, live_from: int, lag_ms: int, clock: Timebase) -> None:
        self.live_from = live_from  # offset from which the partition is live (end at assignment)
        self.lag_ms = lag_ms
        self.live = live_from <= 0
        self.idle = self.live
        self.clock = clock
        self.ticker = Ticker()

    def seen(self, offset: int, event: Event, claim: int, wall_ms: int) -> None:
        self.idle = False
        if offset + 1 >= self.live_from:
            self.live = True
        self.clock.observe(event.service.instance.id, claim, wall_ms - self.lag_ms)

    def ticks(self, wall_ms: int | None = None) -> Iterable[int]:
        """Whole seconds the clock has passed since the last call."""
        if wall_ms is not None and self.live and self.idle:
            self.clock.tick(wall_ms - self.lag_ms)
        now = self.clock.now
        if not now or not (self.live or self.clock.established):
            return  # reading a backlog from too few producers yet to know the time
        yield from self.ticker.until(now)


class _Payments(_Clocked):
    def __init__(self, worker: PartitionWorker, partition: int, live_from: int) -> None:
        super().__init__(live_from, int(worker.settings.allowed_lateness_s * 1000), Timebase.of(worker.settings))
        self.partition = partition
        self.windows = window_counter(worker.settings)
        self.orders = OrderTracker(worker.settings, self.windows)


class _Heartbeats(_Clocked):
    def __init__(self, worker: PartitionWorker, partition: int, live_from: int) -> None:
        super().__init__(live_from, 0, Timebase.of(worker.settings))
        # a required service is awaited by the partition its heartbeats are keyed to
        required = [
            s for s in worker.settings.required_services if key_partition(s, worker.heartbeat_partitions) == partition
        ]
        self.table = HeartbeatTable(worker.settings.model_copy(update={"required_services": required}), self.clock)


class _Emitter:
    """Publishes findings once: ids read back at (re)assignment and ids sent since are skipped.

    An id is remembered for twice the rebuild horizon (wall clock): re-derivation after a rebuild
    only reproduces findings from within the horizon, so older ids can be forgotten."""

    def __init__(self, config: DetectorsConfig, group_id: str, horizon_ms: int) -> None:
        self.config = config
        self.group_id = group_id
        self.topic = config.kafka.topics.findings
        self.keep_ms = 2 * horizon_ms
        self.emitted: dict[str, int] = {}  # finding event.id -> wall ms it became known
        self._forget_at = to_ms(SystemClock().now())  # wall ms of the latest tick

    def refresh(self, since_ms: int) -> None:
        now = to_ms(SystemClock().now())
        for finding_id in read_emitted(self.config, since_ms, self.group_id):
            self.emitted.setdefault(finding_id, now)

    def outputs(self, findings: Iterable[Finding]) -> list[Output]:
        out = []
        for f in findings:
            if f.event.id in self.emitted:
                continue
            self.emitted[f.event.id] = self._forget_at
            out.append(Output(self.topic, f.finding.fingerprint.encode(), encode_finding(f)))
        return out

    def forget(self, wall_ms: int) -> None:
        """Drop ids older than the retention; called on the wall-clock tick."""
        self._forget_at = wall_ms
        cutoff = wall_ms - self.keep_ms
        if self.emitted and next(iter(self.emitted.values())) < cutoff:
            self.emitted = {k: t for k, t in self.emitted.items() if t >= cutoff}


class PartitionWorker(Handler):
    """Handler of the partition-worker group."""

    def __init__(
        self, config: DetectorsConfig, group_id: str, partials: int, instance: str, heartbeat_partitions: int = 1
    ) -> None:
        self.config = config
        self.settings = config.detectors
        self.topics = config.kafka.topics
        self.partials = partials  # partition count of the partials topic
        self.heartbeat_partitions = heartbeat_partitions
        self.instance = instance
        self.horizon_ms = int(self.settings.rebuild_horizon_s * 1000)
        self.payments: dict[int, _Payments] = {}
        self.heartbeats: dict[int, _Heartbeats] = {}
        self.emitter = _Emitter(config, group_id, self.horizon_ms)
        self.intake = Intake(config.intake)  # services' ECS log lines are judged like SDK events
        self.rejected = 0
        self.beats = ProcessHeartbeat(
            Service(name=SERVICE, instance=ServiceInstance(id=instance)), self.settings.heartbeat_interval_s
        )

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        if not partitions:
            return partitions
        since = to_ms(SystemClock().now()) - self.horizon_ms
        self.emitter.refresh(since)
        starts = start_offsets(consumer, partitions, since)
        for tp in starts:
            high = end_offset(consumer, tp.topic, tp.partition)
            live_from = high if tp.offset < high else 0
            if tp.topic == self.topics.payments:
                self.payments[tp.partition] = _Payments(self, tp.partition, live_from)
            else:
                self.heartbeats[tp.partition] = _Heartbeats(self, tp.partition, live_from)
        log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in starts])
        return starts

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            (self.payments if tp.topic == self.topics.payments else self.heartbeats).pop(tp.partition, None)
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])

    def on_eof(self, topic: str, partition: int) -> None:
        state = (self.payments if topic == self.topics.payments else self.heartbeats).get(partition)
        if state is not None:
            state.live = True
            state.idle = True

    def handle(self, message: Message) -> list[Output]:
        try:
            event = self.intake.decode(message.value())
        except ContractError as exc:
            self.rejected += 1  # the collector dead-letters bad events; here they are only skipped
            log.warning("skipping %s[%d]@%d: %s", message.topic(), message.partition(), message.offset(), exc)
            return []
        claim = to_ms(event.timestamp)
        wall = to_ms(SystemClock().now())
        if message.topic() == self.topics.payments:
            state = self.payments.get(message.partition())
            if state is None or event.payment is None:
                return []
            state.seen(message.offset(), event, claim, wall)
            out = self._advance(state)
            return out + self.emitter.outputs(state.orders.feed(event, state.clock.judge(claim)))
        hb = self.heartbeats.get(message.partition())
        if hb is None or event.heartbeat is None:
            return []
        hb.seen(message.offset(), event, claim, wall)
        out = self._advance_heartbeats(hb)
        return out + self.emitter.outputs(hb.table.feed(event, claim))

    def _advance(self, state: _Payments, wall_ms: int | None = None) -> list[Output]:
        out: list[Output] = []
        for now in state.ticks(wall_ms):
            out += self.emitter.outputs(state.orders.tick(now))
            for index, window in state.windows.close_until(now):
                out += self._partials(state.partition, index, window)
        return out

    def _advance_heartbeats(self, hb: _Heartbeats, wall_ms: int | None = None) -> list[Output]:
        out: list[Output] = []
        for now in hb.ticks(wall_ms):
            out += self.emitter.outputs(hb.table.tick(now))
        return out

    def _partials(self, source: int, index: int, window: Window) -> list[Output]:
        by_target: list[dict[str, list]] = [{} for _ in range(self.partials)]
        for key, tally in window.items():
            by_target[partials_partition(key, self.partials)][key] = tally.to_wire()
        total = overall(window)
        if total.pending or total.duplicates:  # the all-channel counts go to the one aggregator that judges them
            by_target[partials_partition(OVERALL, self.partials)][OVERALL] = total.to_wire()
        return [
            Output(
                self.topics.channel_partials,
                f"{source}:{index}".encode(),
                json.dumps({"source": source, "window": index, "tallies": tallies}, sort_keys=True).encode(),
                target,
            )
            for target, tallies in enumerate(by_target)
        ]

    def tick(self, now: datetime) -> list[Output]:
        wall = to_ms(now)
        self.emitter.forget(wall)
        out: list[Output] = []
        for state in self.payments.values():
            out += self._advance(state, wall)
        for hb in self.heartbeats.values():
            out += self._advance_heartbeats(hb, wall)
        return out + self._beats(self.beats.due(now))

    def _beats(self, beats: list[Event]) -> list[Output]:
        """The detector's own heartbeat: watched by the other workers and, for the last one, from outside."""
        return [Output(self.topics.heartbeats, SERVICE.encode(), encode(beat)) for beat in beats]

    def stopping(self, now: datetime) -> list[Output]:
        return self._beats(self.beats.stopping(now))


class _Judged:
    __slots__ = ("board", "judge", "pending")

    def __init__(self, judge: ChannelJudge) -> None:
        self.judge = judge
        self.board = ChannelBoard()  # the health of the channels this partials partition owns
        self.pending: dict[int, dict[int, dict[str, list]]] = {}  # window -> source -> tallies


class ChannelAggregator(Handler):
    """Handler of the aggregator group: sums partials of all sources, judges complete windows."""

    def __init__(self, config: DetectorsConfig, group_id: str, sources: int, partials: int) -> None:
        self.config = config
        self.settings = config.detectors
        self.sources = sources  # partition count of the payments topic
        self.overall_partition = partials_partition(OVERALL, partials)
        self.horizon_ms = int(self.settings.judge_horizon_s * 1000)
        self.owned: dict[int, _Judged] = {}
        self.emitter = _Emitter(config, group_id, self.horizon_ms)
        self.feed_ms = int(self.settings.channel_feed_interval_s * 1000)
        self._next_feed = 0

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        if not partitions:
            return partitions
        since = to_ms(SystemClock().now()) - self.horizon_ms
        self.emitter.refresh(since)
        for tp in partitions:
            judge = ChannelJudge(self.settings, overall=tp.partition == self.overall_partition)
            self.owned[tp.partition] = _Judged(judge)
        return start_offsets(consumer, partitions, since)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.owned.pop(tp.partition, None)

    def on_eof(self, topic: str, partition: int) -> None:
        pass

    def handle(self, message: Message) -> list[Output]:
        owned = self.owned.get(message.partition())
        if owned is None:
            return []
        part = json.loads(message.value())
        index = part["window"]
        last = owned.judge.last_index
        if last is not None and index <= last:
            return []  # re-published by a rebuilding worker; already judged
        sources = owned.pending.setdefault(index, {})
        sources[part["source"]] = part["tallies"]
        if len(sources) < self.sources:
            return []
        complete = owned.pending.pop(index)
        for older in [i for i in owned.pending if i < index]:
            del owned.pending[older]  # began before the horizon: some sources were never read
        window: Window = {}
        for tallies in complete.values():
            for key, row in tallies.items():
                window.setdefault(key, Tally()).add(Tally.from_wire(row))
        findings = owned.judge.on_window(index, window)
        changed = [s for s in map(owned.board.on_finding, findings) if s is not None]
        return self.emitter.outputs(findings) + self._feed(changed)

    def _feed(self, statuses: Iterable[ChannelStatus]) -> list[Output]:
        topic = self.config.kafka.topics.channel_health
        return [Output(topic, s.key.encode(), encode_status(s)) for s in statuses]

    def tick(self, now: datetime) -> list[Output]:
        wall = to_ms(now)
        self.emitter.forget(wall)
        if wall < self._next_feed:
            return []
        self._next_feed = wall + self.feed_ms
        return self._feed(s for owned in self.owned.values() for s in owned.board.snapshot())


def run(
    config: DetectorsConfig, group_id: str, instance: str | None = None, stop: threading.Event | None = None
) -> None:
    """Run one detector worker (both groups) until SIGTERM/SIGINT or `stop`."""
    topics = config.kafka.topics
    names = [topics.payments, topics.heartbeats, topics.findings, topics.channel_partials, topics.channel_health]
    ensure_topics(config.kafka, names)
    ensure_compacted(config.kafka, topics.channel_health)
    probe = Consumer(consumer_config(config.kafka, group_id))
    meta = probe.list_topics(timeout=10).topics
    sources, partials = len(meta[topics.payments].partitions), len(meta[topics.channel_partials].partitions)
    heartbeat_partitions = len(meta[topics.heartbeats].partitions)
    probe.close()
    instance = instance or f"{socket.gethostname()}-{os.getpid()}"
    stop = stop or threading.Event()
    worker = PartitionWorker(config, group_id, partials, instance, heartbeat_partitions)
    workers = Stage(config.kafka, group_id, [topics.payments, topics.heartbeats], worker)
    aggregator = Stage(
        config.kafka,
        group_id + "-channels",
        [topics.channel_partials],
        ChannelAggregator(config, group_id, sources, partials),
    )
    workers.stop = aggregator.stop = stop
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    thread = threading.Thread(target=aggregator.run, name="channel-aggregator", daemon=True)
    thread.start()
    try:
        workers.run()
    finally:
        stop.set()
        thread.join(30)
        workers.produce(worker.stopping(SystemClock().now()))  # a planned stop
        workers.producer.flush(10)
