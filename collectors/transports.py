"""How the emitter SDK delivers encoded events: to Kafka, to the embedded HTTP ingest, or to an
in-process callable (the simulator and tests).

A transport is called only from the SDK's drain thread, one batch at a time, and answers for
every record of the batch: acknowledged, worth retrying later (the receiver is unavailable;
the SDK spills it to disk), or rejected for good (retrying cannot help; the SDK counts and
logs it). A transport that waits long calls `keep_waiting(seconds so far)` now and then, so
the SDK can move newer events to disk meanwhile, and stops waiting when it answers False.
A transport never raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from paywatch.contract import ContractError, Event, decode
from paywatch.retry_after import retry_after_seconds

log = logging.getLogger("paywatch.sdk")
KeepWaiting = Callable[[float], bool]  # (seconds waited so far) -> wait on?


class Record(msgspec.Struct, frozen=True, gc=False):
    """One encoded event with its routing: what is buffered, spilled and sent. A struct the
    cycle collector does not track: thousands wait at a time, and a tuple per record made
    the collector a large share of the drain thread's time."""

    topic: str
    key: str
    value: bytes


@dataclass
class Outcome:
    """The fate of one batch: indexes into it that must be retried, or that were refused for good.
    Every other record of the batch was acknowledged."""

    retry: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    reason: str = ""  # why records are to be retried, for the log line
    retry_after_s: float | None = None  # the receiver asked not to be tried again sooner (Retry-After)

    @classmethod
    def all_retry(cls, n: int, reason: str, retry_after_s: float | None = None) -> Outcome:
        return cls(retry=list(range(n)), reason=reason, retry_after_s=retry_after_s)

    def add(self, other: Outcome, offset: int) -> None:
        """Take in the outcome of a part of this batch that starts at `offset`."""
        self.retry += [offset + i for i in other.retry]
        self.rejected += [(offset + i, why) for i, why in other.rejected]
        self.reason = self.reason or other.reason
        if other.retry_after_s is not None:
            self.retry_after_s = max(self.retry_after_s or 0.0, other.retry_after_s)


class Transport(Protocol):
    name: str

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome: ...

    def close(self) -> None: ...


class CallableTransport:
    """Hands decoded events to a function in this process; an exception means "try again later"."""

    name = "callable"

    def __init__(self, deliver: Callable[[list[Event]], object]) -> None:
        self._deliver = deliver

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
        events: list[Event] = []
        rejected: list[tuple[int, str]] = []
        for i, r in enumerate(records):
            try:
                events.append(decode(r.value))
            except ContractError as exc:  # only a corrupted spill line can get here
                rejected.append((i, str(exc)))
        try:
            self._deliver(events)
        except Exception as exc:
            return Outcome.all_retry(len(records), f"{type(exc).__name__}: {exc}")
        return Outcome(rejected=rejected)

    def close(self) -> None:
        pass


class HttpTransport:
    """POSTs a batch as NDJSON to the embedded backend's `/v1/events` with a bearer token.

    The server judges each line: 200 accepts all, 422 lists the refused ones as
    `{"rejected": [{"line": n, "reason": ...}]}` (1-based) and accepts the rest. Connection
    errors, timeouts, 408, 429 and 5xx are retried, no sooner than a `Retry-After` says; 401/403
    too (a wrong token is fixed by a restart, and the spill file keeps the events until then).
    413 (body too large) splits the batch in halves until the parts pass, and bodies stay under
    the smallest refused size from then on: no event is lost to a body limit, unless one event
    alone is over it (then it is refused). Any other 4xx refuses the batch.
    """

    name = "http"
    _RETRY_STATUS = frozenset({401, 403, 408, 425, 429})
    _TOO_LARGE = 413

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        import httpx

        headers = {"Content-Type": "application/x-ndjson"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._url = url
        self._client = httpx.Client(headers=headers, timeout=timeout_s)
        self._http_error = httpx.HTTPError
        self._too_large: int | None = None  # the smallest body size the ingest refused with 413

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
        outcome = Outcome()
        start, size = 0, 0
        for i, r in enumerate(records):  # parts under the body limit learned so far
            if self._too_large is not None and i > start and size + len(r.value) + 1 >= self._too_large:
                outcome.add(self._post(records[start:i]), start)
                start, size = i, 0
            size += len(r.value) + 1
        outcome.add(self._post(records[start:]), start)
        return outcome

    def _post(self, records: Sequence[Record]) -> Outcome:
        body = b"".join(r.value + b"\n" for r in records)
        try:
            resp = self._client.post(self._url, content=body)
        except self._http_error as exc:
            return Outcome.all_retry(len(records), f"{type(exc).__name__}: {exc}")
        status = resp.status_code
        if status == self._TOO_LARGE:
            self._too_large = min(self._too_large or len(body), len(body))
            if len(records) == 1:
                why = f"HTTP 413: one event is over the ingest's body limit: {resp.text[:200]}"
                return Outcome(rejected=[(0, why)])
            half = len(records) // 2
            outcome = self._post(records[:half])
            outcome.add(self._post(records[half:]), half)
            return outcome
        if status >= 500 or status in self._RETRY_STATUS:
            wait = retry_after_seconds(resp.headers.get("Retry-After")) if status in (429, 503) else None
            return Outcome.all_retry(len(records), f"HTTP {status}: {resp.text[:200]}", wait)
        refused = _refused_lines(resp, len(records)) if status in (200, 422) else None
        if status >= 400 and not refused:
            reason = f"HTTP {status}: {resp.text[:200]}"
            return Outcome(rejected=[(i, reason) for i in range(len(records))])
        return Outcome(rejected=refused or [])

    def close(self) -> None:
        self._client.close()


def _refused_lines(resp: Any, n: int) -> list[tuple[int, str]]:
    """The ingest's per-line verdicts as (0-based index, reason); [] when the body has none."""
    try:
        items = resp.json().get("rejected") or []
        return [(int(it["line"]) - 1, str(it.get("reason", ""))) for it in items if 0 < int(it["line"]) <= n]
    except Exception:  # not the documented shape: nothing is known to be refused
        return []


class _OncePerMinute(logging.Filter):
    """librdkafka repeats a line per reconnect attempt (every second while brokers are down); one
    line per kind per minute says the same. The SDK logs the outage itself, with counts."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.getMessage().split(" ", 1)[0]
        now = time.monotonic()
        if now - self._last.get(kind, -60.0) < 60.0:
            return False
        self._last[kind] = now
        return True


def _librdkafka_logger() -> logging.Logger:
    logger = logging.getLogger("paywatch.sdk.kafka")
    if not any(isinstance(f, _OncePerMinute) for f in logger.filters):
        logger.addFilter(_OncePerMinute())
    return logger


class KafkaTransport:
    """confluent-kafka Producer: idempotent, acks=all, one batch in flight at a time.

    A batch handed to librdkafka stays there until acknowledged or `delivery_timeout_s`
    (librdkafka's `message.timeout.ms`) has passed: through a slow or restarting broker its own
    retries of the same idempotent producer deliver each record once. Taking a record back
    earlier and replaying it from disk would duplicate it whenever the broker had written it
    and only the acknowledgement was late. `send` returns when every record has its delivery
    report, so none is both spilled and later delivered by librdkafka, unless `keep_waiting`
    says stop (a closing SDK); then the records without a report are purged and count as not sent.

    The drain thread's per-record work is one `produce` call: librdkafka reports only failed
    deliveries (`delivery.report.only.error`), the batch is done when the producer's queue is
    empty, and waiting flushes, which sends at once instead of lingering (`linger.ms`). The wait
    is in short steps with `keep_waiting` between them, so the SDK makes the next batch's
    records while this one is on the wire.
    """

    name = "kafka"
    # librdkafka reports timed-out messages up to about a second after message.timeout.ms.
    _REPORT_GRACE_S = 2.0
    # The wait for acknowledgements: a first short flush, long enough for librdkafka's broker
    # thread to wake and send the batch at once (it lingers otherwise), then steps of 2 ms; after
    # each one the SDK has the drain thread back (`keep_waiting`) and makes the next batch's
    # records meanwhile. A batch is acknowledged in a few ms on a healthy cluster: a step of
    # 0.1 s would idle the SDK.
    _SEND_NOW_S = 0.001
    _WAIT_STEP_S = 0.002

    def __init__(self, config: dict[str, Any], delivery_timeout_s: float) -> None:
        from confluent_kafka import KafkaError, KafkaException, Producer

        self._delivery_timeout_s = delivery_timeout_s
        self._failed: list[tuple[Any, bytes]] = []  # (error, value) of each failed delivery
        self._conf = {
            **config,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "reconnect.backoff.max.ms": 1000,
            "delivery.report.only.error": True,
            "on_delivery": self._on_failed,
            "error_cb": self._on_error,
            "logger": _librdkafka_logger(),
        }
        self._producer_class = Producer
        self._kafka_exception = KafkaException
        self._permanent = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})
        self._fatal: str | None = None
        self._producer = Producer(self._conf)

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = str(err)

    def _on_failed(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append((err, msg.value()))

    def send(self, records: Sequence[Record], keep_waiting: KeepWaiting) -> Outcome:
        if self._fatal is not None:
            self._renew_producer()
        outcome = Outcome()
        produce = self._producer.produce
        for i, r in enumerate(records):
            try:
                produce(r.topic, r.value, r.key)
            except BufferError:  # librdkafka's own queue is full: the rest waits for the next send
                outcome.retry.extend(range(i, len(records)))
                outcome.reason = "librdkafka queue full"
                break
            except self._kafka_exception as exc:  # refused before sending, e.g. too large
                outcome.rejected.append((i, str(exc)))
        started = time.monotonic()
        limit = self._delivery_timeout_s + self._REPORT_GRACE_S
        step = self._SEND_NOW_S
        while len(self._producer):
            self._producer.flush(step)  # while flushing, librdkafka sends at once instead of after linger.ms
            step = self._WAIT_STEP_S
            waited = time.monotonic() - started
            if not len(self._producer) or waited >= limit or not keep_waiting(waited):
                break
        if len(self._producer):  # no report yet: the record may still be delivered, but counts as not sent
            self._producer.purge()
            self._producer.flush(0)  # serves the purged records' reports: they count as retry
            outcome.reason = "no delivery report in time"
        if self._failed:
            index = {r.value: i for i, r in enumerate(records)}
            for err, value in self._failed:
                i = index.get(value)
                if i is None:  # a report of a producer renewed since
                    continue
                if err.code() in self._permanent:
                    outcome.rejected.append((i, str(err)))
                else:
                    outcome.retry.append(i)
                    outcome.reason = outcome.reason or str(err)
            self._failed.clear()
        outcome.retry.sort()
        return outcome

    def _renew_producer(self) -> None:
        """A fatal idempotence error (e.g. producer fenced) makes the old producer useless."""
        log.error("paywatch sdk: Kafka producer fatal error (%s); creating a new producer", self._fatal)
        self._producer.purge()
        self._producer = self._producer_class(self._conf)
        self._fatal = None

    def close(self) -> None:
        self._producer.purge()
        self._producer.flush(0)
