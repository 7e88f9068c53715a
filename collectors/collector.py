"""The collector: Kafka topics → validated, PAN-masked documents → Elasticsearch data streams.

One loop, one pass per batch: take up to `batch_size` messages, turn each into a bulk
`create` line (or a dead letter with the reason), send one bulk request, send refused
documents to the dead-letter topic, and only then commit the batch's offsets. The bulk
request goes out on a worker thread, so while Elasticsearch indexes one batch the loop
already reads and prepares the next (Elasticsearch's wall time, not the decoding, bounds
throughput); batches are still settled and committed one at a time, in order.

Delivery is at-least-once from Kafka and idempotent in Elasticsearch: the document `_id`
is the event's `event.id` and the op is `create`, so a redelivered event answers 409
(already indexed) and counts as success. A crash between indexing and committing costs
a re-send, never a duplicate. While Elasticsearch (or Kafka, for dead letters) is down the
assigned partitions are paused and the batch is retried with backoff; the consumer keeps
polling so it stays in its group, and nothing past the batch is read until it succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgspec
import structlog
from msgspec import Struct

from paywatch.clock import Clock, SystemClock
from paywatch.collectors.dlq import INVALID, REJECTED, DeadLetters
from paywatch.contract import APP, DATASETS, HEARTBEAT, PAYMENT, ContractError, Id, Timestamp, encode
from paywatch.elastic import data_stream
from paywatch.finding import FINDING, decode_finding
from paywatch.intake import Intake, IntakeSettings
from paywatch.kafka import commit
from paywatch.metrics import meter
from paywatch.pan import DEFAULT, PanSettings, mask_event, mask_text, mask_tree, may_contain_pan

try:
    from paywatch import _native as native
except ImportError:  # built without Rust (see `native/`): every message takes the Python path
    native = None

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, TopicPartition
    from elasticsearch import Elasticsearch

    from paywatch.collectors.settings import CollectorSettings
    from paywatch.settings import ElasticsearchSettings, KafkaSettings, Topics

log = structlog.get_logger("paywatch.collector")

STAGE: Final = "collector"
# Per-document statuses worth retrying (overload, shard not ready); other errors are the document's.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# `errors` is false when every document was created: the common case skips the per-item loop.
BULK_FILTER: Final = "errors,items.*.status,items.*.error.type,items.*.error.reason"

# raw message, processing time -> (event.id, document bytes to store)
Prepare = Callable[[bytes, datetime], tuple[str, bytes]]

_encode_json = msgspec.json.Encoder().encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def prepare_event(dataset: str, max_bytes: int, intake: Intake, pan: PanSettings = DEFAULT) -> Prepare:
    """Contract events (payments, heartbeats, application logs), as the SDK or an ECS logger wrote
    them: decode, mask, stamp, re-encode. The card-number policy may reject the event
    (ContractError): it is then dead-lettered."""

    def prepare(raw: bytes, now: datetime) -> tuple[str, bytes]:
        event = intake.decode(raw, max_bytes=max_bytes)
        if event.event.dataset != dataset:
            raise ContractError(f"event.dataset {event.event.dataset!r} on a topic that carries {dataset!r}")
        if may_contain_pan(raw):
            mask_event(event, pan)
        event.event.ingested = now
        return event.event.id, encode(event)

    return prepare


def prepare_finding(raw: bytes, now: datetime) -> tuple[str, bytes]:
    finding = decode_finding(raw)
    if not finding.event.id:
        raise ContractError("event.id is empty")
    return _store_tree(msgspec.to_builtins(finding), now)


class _DocEvent(Struct):
    id: Id
    dataset: str


class _DocHead(Struct, rename={"timestamp": "@timestamp"}):
    """What every stored document has, whoever writes it (alert and action documents)."""

    timestamp: Timestamp
    event: _DocEvent


def prepare_document(dataset: str) -> Prepare:
    """Documents of other stages (alerts, actions): a JSON object with @timestamp, event.id, event.dataset."""

    def prepare(raw: bytes, now: datetime) -> tuple[str, bytes]:
        try:
            tree = _decode_object(raw)
            head = msgspec.convert(tree, _DocHead)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
            raise ContractError(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise ContractError(f"not valid JSON: {exc}") from None
        if head.event.dataset != dataset:
            raise ContractError(f"event.dataset {head.event.dataset!r} on a topic that carries {dataset!r}")
        return _store_tree(tree, now)

    return prepare


def _store_tree(tree: dict[str, Any], now: datetime) -> tuple[str, bytes]:
    tree = mask_tree(tree)
    tree["event"]["ingested"] = now
    return tree["event"]["id"], _encode_json(tree)


class Route(Struct, frozen=True):
    """What one topic carries and where it is stored."""

    dataset: str
    prepare: Prepare
    action: bytes  # bulk action line up to the `_id` value
    max_bytes: int  # the largest message `prepare` takes
    # How the native fast path masks free text holding a card number: `mask_text` when the policy
    # masks it; None leaves such a message to `prepare`.
    mask: Callable[[str], str] | None


def routes(
    topics: Topics, namespace: str, max_event_bytes: int, intake: Intake | None = None, pan: PanSettings = DEFAULT
) -> dict[str, Route]:
    """Topic → route, for every topic the collector consumes."""
    intake = intake or Intake()
    table: dict[str, tuple[str, Prepare]] = {
        topics.payments: (PAYMENT, prepare_event(PAYMENT, max_event_bytes, intake, pan)),
        topics.heartbeats: (HEARTBEAT, prepare_event(HEARTBEAT, max_event_bytes, intake, pan)),
        topics.logs: (APP, prepare_event(APP, max_event_bytes, intake, pan)),
        topics.findings: (FINDING, prepare_finding),
        topics.alerts: ("paywatch.alert", prepare_document("paywatch.alert")),
        topics.actions: ("paywatch.action", prepare_document("paywatch.action")),
    }
    return {
        topic: Route(
            dataset=dataset,
            prepare=prepare,
            action=b'{"create":{"_index":"%s","_id":' % data_stream(dataset, namespace).encode(),
            max_bytes=max_event_bytes,
            mask=mask_text if pan.text_policy == "mask" else None,
        )
        for topic, (dataset, prepare) in table.items()
    }


class Batch:
    """One batch in bulk form: `lines[i]` is the action + document for `messages[i]`."""

    __slots__ = ("dead", "lines", "messages", "offsets")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.messages: list[Message] = []
        self.dead: list[tuple[Message, str]] = []
        self.offsets: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to commit


def build_batch(messages: list[Message], table: dict[str, Route], now: datetime, max_event_bytes: int) -> Batch:
    """The pure core of the collector: messages → bulk lines or dead letters with a precise reason.

    Contract events as paywatch's own encoder writes them (the SDK's, nearly every message) are
    recognised by the native fast path (`paywatch._native`), which writes the same line the
    Python path below would (tests/test_native.py holds the two to it) at a tenth of the cost;
    every other message, and every one where it is not built, takes the Python path."""
    batch = Batch()
    lines, kept, dead, offsets = batch.lines, batch.messages, batch.dead, batch.offsets
    topics = [msg.topic() for msg in messages]
    raws = [msg.value() for msg in messages]
    # A partition's messages come in offset order: the last one of each sets its commit.
    partitions = zip(topics, [msg.partition() for msg in messages], strict=True)
    offsets.update(zip(partitions, [msg.offset() + 1 for msg in messages], strict=True))
    fast = _native_lines(raws, topics, table, now, max_event_bytes)
    done = 0
    for i in [i for i, line in enumerate(fast) if line is None]:  # the runs between them, at C speed
        lines += fast[done:i]
        kept += messages[done:i]
        done = i + 1
        msg, topic, raw = messages[i], topics[i], raws[i]
        route = table.get(topic)
        if route is None:
            dead.append((msg, f"no dataset is stored from topic {topic!r}"))
        elif not raw:
            dead.append((msg, "empty message: no value"))
        elif len(raw) > max_event_bytes:
            dead.append((msg, f"message is {len(raw)} bytes, over the {max_event_bytes}-byte limit"))
        else:
            try:
                event_id, doc = route.prepare(raw, now)
            except ContractError as exc:
                dead.append((msg, f"{route.dataset}: {exc}"))
                continue
            lines.append(b"%s%s}}\n%s\n" % (route.action, _encode_json(event_id), doc))
            kept.append(msg)
    lines += fast[done:]
    kept += messages[done:]
    return batch


def _native_lines(
    raws: list[bytes | None], topics: list[str], table: dict[str, Route], now: datetime, max_bytes: int
) -> list[bytes | None]:
    """The native fast path's line for each message it recognises, None for the others: all of
    them when the extension was not built (see `native/`) or failed, which costs only time."""
    if native is None:
        return [None] * len(raws)
    contract = {topic: route for topic, route in table.items() if route.dataset in DATASETS}
    limit = min([max_bytes, *(route.max_bytes for route in contract.values())])  # the Python path's own
    try:
        return native.bulk_lines(
            raws, topics, {topic: (r.dataset, r.action, r.mask) for topic, r in contract.items()}, encode(now), limit
        )
    except Exception as exc:  # a fault there must not stop the batch: the Python path judges it all
        log.error("native fast path failed; this batch takes the Python path", error=f"{type(exc).__name__}: {exc}")
        return [None] * len(raws)


def chunks(lines: list[bytes], indexes: Iterable[int], max_bytes: int) -> Iterator[list[int]]:
    """Split line indexes into bulk requests of at most max_bytes (a single bigger line goes alone)."""
    chunk: list[int] = []
    size = 0
    for i in indexes:
        n = len(lines[i])
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(i)
        size += n
    if chunk:
        yield chunk


class CollectorHealth:
    """The collector's health instruments; Prometheus reads them from /metrics."""

    def __init__(self) -> None:
        m = meter("paywatch.collector")
        self._events = m.create_counter(
            "paywatch.collector.events",
            unit="{event}",
            description="Messages handled, by result: indexed, duplicate (already stored), dead_lettered.",
        )
        self._rate = m.create_gauge(
            "paywatch.collector.events_per_second",
            unit="{event}/s",
            description="Messages handled per second over the last batch.",
        )
        self._bulk = m.create_histogram(
            "paywatch.collector.bulk.duration",
            unit="s",
            description="Latency of one Elasticsearch bulk request.",
            explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        )
        self._dead = m.create_counter(
            "paywatch.collector.dead_letters",
            unit="{message}",
            description="Messages sent to the dead-letter topic, by kind: invalid, rejected.",
        )
        self._lag = m.create_gauge(
            "paywatch.collector.consumer_lag",
            unit="{message}",
            description="Messages in a partition not yet committed by the collector's group.",
        )
        self._paused = m.create_gauge(
            "paywatch.collector.paused",
            description="1 while consumption is paused because a downstream is unavailable.",
        )

    def record_batch(self, indexed: int, duplicates: int, invalid: int, rejected: int, seconds: float) -> None:
        for result, n in (("indexed", indexed), ("duplicate", duplicates), ("dead_lettered", invalid + rejected)):
            if n:
                self._events.add(n, {"result": result})
        for kind, n in ((INVALID, invalid), (REJECTED, rejected)):
            if n:
                self._dead.add(n, {"kind": kind})
        if seconds > 0:
            self._rate.set((indexed + duplicates + invalid + rejected) / seconds)

    def bulk_latency(self, seconds: float) -> None:
        self._bulk.record(seconds)

    def paused(self, paused: bool) -> None:
        self._paused.set(int(paused))

    def lag(self, consumer: Consumer, committed: list[TopicPartition]) -> None:
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                self._lag.set(max(high - tp.offset, 0), {"topic": tp.topic, "partition": tp.partition})


Sent = list[tuple[Sequence[int], "Future[list[dict[str, Any]] | None]"]]  # line indexes, their bulk request


class InFlight(NamedTuple):
    """A batch whose bulk requests are out: settled (and committed) before the next one."""

    batch: Batch
    messages: int  # taken from Kafka, dead letters included
    sent: Sent


class Stopped(Exception):
    """Stop was requested while a batch waited for a downstream; its offsets stay uncommitted."""


class Collector:
    """Runs the loop against a Kafka consumer, a dead-letter producer and Elasticsearch."""

    def __init__(
        self,
        settings: CollectorSettings,
        table: dict[str, Route],
        consumer: Consumer,
        dead_letters: DeadLetters,
        es: Elasticsearch,
        clock: Clock | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.table = table
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.es = es
        self.clock = clock or SystemClock()
        self.should_stop = should_stop
        self.health = CollectorHealth()
        self.handled = 0  # messages taken from Kafka and settled (stored, duplicate or dead-lettered)
        self.paused = False  # True while a downstream outage holds the partitions paused
        self._last_step = time.monotonic()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="collector-bulk")

    def run(self) -> None:
        """Subscribe and process batches until should_stop(); a batch cut short is redone next time."""
        if native is None:
            log.warning(
                "paywatch._native is not built: every message takes the Python path, at about twice "
                "the CPU per event; reinstall with a Rust toolchain on PATH (`pip install -e .`)"
            )
        self.consumer.subscribe(list(self.table))
        in_flight: InFlight | None = None
        try:
            while not self.should_stop():
                in_flight = self.step(in_flight)
            if in_flight is not None:
                self._settle(in_flight)
        except Stopped:
            pass
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.consumer.close()
            self.dead_letters.flush(5.0)

    def step(self, in_flight: InFlight | None = None) -> InFlight | None:
        """Read and prepare the next batch while `in_flight` is being indexed, then settle that one
        (results, dead letters, commit) and send this one. Returns the batch now in flight."""
        # With a batch in flight, take what is there rather than wait for a full batch: the
        # settled batch's commit must not wait on a quiet topic.
        timeout = self.settings.poll_timeout_s if in_flight is None else min(self.settings.poll_timeout_s, 0.05)
        messages = self.consumer.consume(self.settings.batch_size, timeout)
        good = [msg for msg in messages if msg.error() is None]
        if len(good) != len(messages):
            for err in filter(None, (msg.error() for msg in messages)):
                if err.fatal():
                    raise RuntimeError(f"fatal Kafka consumer error: {err}")
                log.warning("kafka consumer error", error=str(err))
        batch = build_batch(good, self.table, self.clock.now(), self.settings.max_event_bytes)
        if in_flight is not None:
            self._settle(in_flight)
        if not good:
            return None
        for msg, reason in batch.dead:
            self.dead_letters.send(msg, reason, INVALID)
        return InFlight(batch, len(good), self._send(batch, range(len(batch.lines))))

    def _settle(self, flight: InFlight) -> None:
        """Wait for the batch's bulk results (retrying what must be), dead-letter what Elasticsearch
        refused, and only then commit its offsets."""
        batch = flight.batch
        indexed, duplicates, rejected = self._index(batch, flight.sent)
        for msg, reason in rejected:
            self.dead_letters.send(msg, reason, REJECTED)
        attempt = 0
        while not self.dead_letters.flush(1.0):
            self._backoff(attempt, "dead-letter topic")
            attempt += 1
        self._resume()
        self._commit(batch.offsets)
        now = time.monotonic()
        self.health.record_batch(
            indexed=indexed,
            duplicates=duplicates,
            invalid=len(batch.dead),
            rejected=len(rejected),
            seconds=now - self._last_step,
        )
        self._last_step = now
        self.handled += flight.messages

    def _send(self, batch: Batch, indexes: Sequence[int]) -> Sent:
        """Bulk requests for these lines, on the worker thread (the whole batch in one when it fits)."""
        lines = batch.lines
        if len(indexes) == len(lines) and sum(map(len, lines)) <= self.settings.bulk_max_bytes:
            return [(indexes, self._pool.submit(self._bulk, b"".join(lines)))]
        return [
            (chunk, self._pool.submit(self._bulk, b"".join([batch.lines[i] for i in chunk])))
            for chunk in chunks(batch.lines, indexes, self.settings.bulk_max_bytes)
        ]

    def _index(self, batch: Batch, sent: Sent) -> tuple[int, int, list[tuple[Message, str]]]:
        """Collect the bulk results; re-send lines until each is stored, a duplicate, or refused for itself."""
        indexed = duplicates = 0
        rejected: list[tuple[Message, str]] = []
        attempt = 0
        while sent:
            retry: list[int] = []
            for chunk, request in sent:
                items = request.result()
                if items is None:
                    retry.extend(chunk)
                    continue
                if not items:  # every document created
                    indexed += len(chunk)
                    continue
                for i, item in zip(chunk, items, strict=True):
                    result = next(iter(item.values()))
                    status = result["status"]
                    if status < 300:
                        indexed += 1
                    elif status == 409:
                        duplicates += 1
                    elif status in RETRY_STATUSES:
                        retry.append(i)
                    else:
                        err = result.get("error") or {}
                        reason = f"elasticsearch refused the document ({status} {err.get('type')}): "
                        rejected.append((batch.messages[i], reason + str(err.get("reason"))))
            sent = []
            if retry:
                log.warning("elasticsearch could not take every document yet; retrying", documents=len(retry))
                self._backoff(attempt, "elasticsearch")
                attempt += 1
                sent = self._send(batch, sorted(retry))
        return indexed, duplicates, rejected

    def _bulk(self, body: bytes) -> list[dict[str, Any]] | None:
        """One bulk request: each document's result when some document was not created, [] when
        every one was, None when Elasticsearch is unreachable or refused the whole request."""
        from elasticsearch import ApiError, TransportError

        started = time.perf_counter()
        try:
            resp = self.es.bulk(operations=body, filter_path=BULK_FILTER)
        except (TransportError, ApiError) as exc:
            log.warning("elasticsearch bulk failed; pausing consumption", error=str(exc))
            return None
        self.health.bulk_latency(time.perf_counter() - started)
        return resp["items"] if resp["errors"] else []

    def _backoff(self, attempt: int, downstream: str) -> None:
        """Pause the partitions and wait before retry number `attempt` (exponential, capped)."""
        self._pause(downstream)
        self._wait(min(self.settings.retry_initial_s * 2**attempt, self.settings.retry_max_s))

    def _pause(self, downstream: str) -> None:
        if not self.paused:
            log.warning("downstream unavailable; partitions paused", downstream=downstream)
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
            self.health.paused(True)

    def _resume(self) -> None:
        if self.paused:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False
            self.health.paused(False)
            log.info("downstream back; partitions resumed")

    def _wait(self, seconds: float) -> None:
        """Sleep while polling, so the group does not evict us; paused partitions deliver nothing."""
        from confluent_kafka import TopicPartition

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.should_stop():
                raise Stopped
            msg = self.consumer.poll(min(left, 0.5))
            if msg is not None and msg.error() is None:
                # A partition assigned during the pause delivered: rewind it and pause it too.
                tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
                self.consumer.pause([tp])
                self.consumer.seek(tp)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        if not offsets:
            return
        # A refused commit is logged there: the events are stored, and re-read ones are answered
        # 409 by Elasticsearch.
        commit(self.consumer, offsets)
        self.health.lag(self.consumer, [TopicPartition(t, p, o) for (t, p), o in offsets.items()])


def connect(
    settings: CollectorSettings,
    kafka: KafkaSettings,
    elasticsearch: ElasticsearchSettings,
    intake: IntakeSettings,
    pan: PanSettings,
    should_stop: Callable[[], bool] = lambda: False,
) -> Collector:
    """Wire a Collector to the configured Kafka and Elasticsearch; topics and templates are
    created first, waiting (with backoff) for servers that are not up yet."""
    from confluent_kafka import Consumer, Producer

    from paywatch.collectors.templates import install_templates
    from paywatch.elastic import client
    from paywatch.kafka import consumer_config, ensure_topics, producer_config

    table = routes(kafka.topics, elasticsearch.namespace, settings.max_event_bytes, Intake(intake), pan)
    es = client(elasticsearch)
    steps = [lambda: ensure_topics(kafka, [*table, kafka.topics.dead_letter])]
    if settings.install_templates:
        steps.append(lambda: install_templates(es))
    for step in steps:
        _with_retries(step, settings, should_stop)
    consumer = Consumer(consumer_config(kafka, settings.consumer_group, **{"client.id": "paywatch-collector"}))
    # No delivery timeout: during a Kafka outage dead letters wait (and the batch with them).
    producer = Producer(producer_config(kafka, **{"message.timeout.ms": 0, "client.id": "paywatch-collector"}))
    dead_letters = DeadLetters(producer, kafka.topics.dead_letter, STAGE, pan)
    return Collector(settings, table, consumer, dead_letters, es, should_stop=should_stop)


def _with_retries(step: Callable[[], object], settings: CollectorSettings, should_stop: Callable[[], bool]) -> None:
    wait = settings.retry_initial_s
    while True:
        try:
            step()
            return
        except Exception as exc:  # servers still starting: any failure is worth another try
            log.warning("start-up step failed; retrying", error=str(exc), retry_in_s=wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if should_stop():
                raise Stopped
            time.sleep(0.1)
        wait = min(wait * 2, settings.retry_max_s)
