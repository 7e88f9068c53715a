"""Scale-out without Kafka: per-partition workers publishing partials and the aggregator summing
them judge channels exactly like one engine over the whole stream."""

from __future__ import annotations

import zlib

from test_detectors import T0, pay

from paywatch.app.config import Config
from paywatch.contract import encode
from paywatch.detectors.channel_health import ChannelJudge
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.detectors.runtime import (
    ChannelAggregator,
    PartitionWorker,
    _Heartbeats,
    _Judged,
    _Payments,
    partials_partition,
)
from paywatch.detectors.settings import DetectorSettings
from paywatch.finding import decode_finding
from paywatch.kafka import key_partition

SOURCES, TARGETS = 3, 2


class Msg:
    """The two things the handlers read from a Kafka message."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v


def _stream():
    """Ten minutes on two channels; bank_b fails everything for two of them, alipay stops recording payments."""
    events = []
    for s in range(600):
        for ch in ("alipay", "bank_b"):
            for i in range(5):
                oid = f"{ch}-{s}-{i}"
                t = s + i / 5
                if ch == "bank_b" and 200 <= s < 320:
                    events.append(
                        pay(t, "payment_requested", oid, "a", channel=ch, outcome="failure", error_category="channel")
                    )
                    continue
                events.append(pay(t, "payment_requested", oid, "a", channel=ch, outcome="success"))
                if not (ch == "alipay" and 400 <= s < 430):
                    events.append(pay(t + 0.3, "order_paid", oid))
    for ch in ("alipay", "wechatpay"):  # 4 orders charged twice, on channels that different aggregators own
        for i in range(2):
            oid = f"dup-{ch}-{i}"
            events.append(pay(500 + i, "payment_requested", oid, "a", channel=ch, outcome="success"))
            events.append(pay(500.3 + i, "order_paid", oid))
            events.append(pay(501 + i, "payment_requested", oid, "b", channel=ch, outcome="success"))
    return sorted(events, key=lambda e: e.timestamp)


def _channel_findings(findings):
    kinds = ("channel_health", "error_code_spike", "paid_but_pending_incident", "duplicate_charge_incident")
    return [
        (f.timestamp, f.finding.fingerprint, f.finding.state, f.finding.level)
        for f in findings
        if f.finding.kind in kinds
    ]


def test_partials_of_three_partitions_judge_like_one_engine():
    settings = DetectorSettings()
    events = _stream()
    single = _channel_findings(list(replay_events(events, DetectionEngine(settings))))
    assert {fp for _, fp, state, _ in single if state == "open"} == {
        "channel_health:bank_b",
        "paid_but_pending_incident:alipay",
        "duplicate_charge_incident:all",
    }

    config = Config(detectors=settings)
    worker = PartitionWorker(config, "g", TARGETS, "w")
    for p in range(SOURCES):
        worker.payments[p] = _Payments(worker, p, live_from=0)
    aggregator = ChannelAggregator(config, "g", SOURCES, TARGETS)
    aggregator.owned = {
        q: _Judged(ChannelJudge(settings, overall=q == aggregator.overall_partition)) for q in range(TARGETS)
    }
    partials = []
    offsets = [0] * SOURCES
    for e in events:
        p = zlib.crc32(e.payment.order_id.encode()) % SOURCES
        partials += [
            o
            for o in worker.handle(Msg(config.kafka.topics.payments, p, offsets[p], encode(e)))
            if o.topic == config.kafka.topics.channel_partials
        ]
        offsets[p] += 1
    # the aggregator sees each partial twice (a rebuilding worker re-publishes), sources interleaved
    judged = []
    for out in partials + partials:
        judged += aggregator.handle(Msg(out.topic, out.partition, 0, out.value))
    merged = _channel_findings([decode_finding(o.value) for o in judged if o.topic == config.kafka.topics.findings])
    # the single engine judged the windows up to its last tick; the partitions close the same windows
    assert merged == single


def test_each_channel_has_one_owner_whatever_the_process():
    # crc32, not hash(): Python salts str hashes per process
    assert partials_partition("alipay", 6) == zlib.crc32(b"alipay") % 6
    assert partials_partition("alipay/qr", 6) == partials_partition("alipay", 6)


def test_a_required_service_is_awaited_by_the_partition_its_heartbeats_go_to():
    settings = DetectorSettings(required_services=["compensation-job"], startup_grace_s=10)
    worker = PartitionWorker(Config(detectors=settings), "g", 1, "w", heartbeat_partitions=6)
    owner = key_partition("compensation-job", 6)
    tables = {p: _Heartbeats(worker, p, live_from=0).table for p in range(6)}
    start = int(T0.timestamp() * 1000)
    down = {p: [f.service.name for f in t.tick(start) + t.tick(start + 10_000)] for p, t in tables.items()}
    assert down == {p: (["compensation-job"] if p == owner else []) for p in range(6)}


def test_emitter_publishes_each_finding_once_and_forgets_after_twice_the_horizon():
    from paywatch.detectors.runtime import _Emitter
    from paywatch.finding import make_finding

    emitter = _Emitter(Config(), "g", horizon_ms=1000)
    f = make_finding(
        at=T0, kind="service_down", state="open", fingerprint="service_down:x", severity="critical", summary="x"
    )
    emitter.forget(10_000)
    assert len(emitter.outputs([f, f])) == 1
    assert emitter.outputs([f]) == []
    emitter.forget(11_999)
    assert emitter.outputs([f]) == []  # still within 2 × horizon
    emitter.forget(12_001)
    assert len(emitter.outputs([f])) == 1
