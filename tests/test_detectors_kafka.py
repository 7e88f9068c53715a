"""`paywatch detect` on REAL Kafka: 1 worker and 3 workers (one SIGKILLed mid-run and restarted)
read the same event stream; every injected incident is published exactly once, and the
channel findings of both runs are identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer

from paywatch.contract import Event, EventMeta, Heartbeat, Payment, Service, ServiceInstance, encode
from paywatch.finding import decode_finding, is_incident
from paywatch.kafka import ensure_topics
from paywatch.settings import KafkaSettings

pytestmark = [pytest.mark.kafka]

PAYWATCH = str(Path(sys.executable).with_name("paywatch"))
TRAFFIC_S = 60
DETECTORS = {
    "window_s": 1.0,
    "allowed_lateness_s": 2.0,
    "health_spans_s": [3.0, 60.0],
    "degrade_after": 3,
    "recover_after": 5,
    "incident_span_windows": 20,
    "duplicate_span_windows": 10,
    "incident_resolve_after": 10,
    "heartbeat_interval_s": 1.0,
    "default": {"paid_grace_s": 5.0, "query_after_s": 30.0},
}


def _config(tmp: Path, bootstrap: str, suffix: str, run: str) -> Path:
    topics = {
        "payments": f"payments-{suffix}",
        "heartbeats": f"heartbeats-{suffix}",
        "findings": f"findings-{suffix}-{run}",
        "channel_partials": f"partials-{suffix}-{run}",
    }
    cfg = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topics": topics,
            "client": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        },
        "detectors": DETECTORS,
    }
    path = tmp / f"{run}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _worker(config: Path, group: str, name: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PAYWATCH, "detect", "--config", str(config), "--consumer-group", group, "--instance", name],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class Traffic:
    """Real-time payment traffic with injected incidents, timestamps = now."""

    def __init__(self, producer: Producer, payments: str, heartbeats: str) -> None:
        self.p, self.payments, self.heartbeats = producer, payments, heartbeats
        self.n = 0

    def pay(self, at: datetime, action: str, order: str, attempt: str | None, channel: str | None, **kw) -> None:
        self.n += 1
        outcome = kw.pop("outcome", None)
        e = Event(
            timestamp=at,
            event=EventMeta(id=f"t-{self.n}", dataset="paywatch.payment", action=action, outcome=outcome),
            service=Service(name="checkout", instance=ServiceInstance(id="checkout-1")),
            payment=Payment(order_id=order, attempt_id=attempt, channel=channel, **kw),
        )
        self.p.produce(self.payments, encode(e), e.key.encode())

    def beat(self, at: datetime, seq: int) -> None:
        e = Event(
            timestamp=at,
            event=EventMeta(id=f"hb-{seq}", dataset="paywatch.heartbeat"),
            service=Service(name="compensation-job", instance=ServiceInstance(id="cj-1")),
            heartbeat=Heartbeat(interval_s=1.0, seq=seq, status="up"),
        )
        self.p.produce(self.heartbeats, encode(e), e.key.encode())

    def second(self, s: int) -> None:
        """One second of traffic: 10 orders on each of three channels."""
        now = datetime.now(UTC)
        for ch in ("alipay", "wechatpay", "bank_b"):
            for i in range(10):
                oid = f"{ch}-{s}-{i}"
                t = now + timedelta(milliseconds=i * 90)
                if ch == "bank_b" and 20 <= s < 35:  # the bank is down
                    self.pay(
                        t,
                        "payment_requested",
                        oid,
                        "a1",
                        ch,
                        outcome="failure",
                        error_code="BANK_DOWN",
                        error_category="channel",
                    )
                    continue
                self.pay(t, "payment_requested", oid, "a1", ch, amount_minor=1000, currency="CNY")
                self.pay(
                    t + timedelta(milliseconds=40),
                    "channel_callback",
                    oid,
                    "a1",
                    ch,
                    outcome="success",
                    amount_minor=1000,
                    currency="CNY",
                )
                if ch == "wechatpay" and 30 <= s < 34 and i < 3:  # charged twice
                    self.pay(
                        t + timedelta(milliseconds=60),
                        "channel_callback",
                        oid,
                        "a2",
                        ch,
                        outcome="success",
                        amount_minor=1000,
                        currency="CNY",
                    )
                if not (ch == "alipay" and 10 <= s < 25):  # alipay callbacks not processed
                    self.pay(t + timedelta(milliseconds=80), "order_paid", oid, None, None)
        if s < 30:  # the compensation job dies at 30 s
            self.beat(now, s)
        self.p.flush(10)


def _read(bootstrap: str, topic: str) -> list:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    c.subscribe([topic])
    found, idle = [], 0
    while idle < 5:
        msg = c.poll(1.0)
        if msg is None or msg.error():
            idle += msg is None
            continue
        idle = 0
        found.append(decode_finding(msg.value()))
    c.close()
    return found


@pytest.mark.slow
def test_three_workers_with_a_kill_find_each_incident_once_and_match_one_worker(kafka_bootstrap, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    one, three = _config(tmp_path, kafka_bootstrap, suffix, "one"), _config(tmp_path, kafka_bootstrap, suffix, "three")
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(settings, [f"payments-{suffix}", f"heartbeats-{suffix}"])
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_worker(one, f"g1-{suffix}", "solo", tmp_path / "solo.log"))
        workers = {n: _worker(three, f"g3-{suffix}", n, tmp_path / f"{n}.log") for n in ("w1", "w2", "w3")}
        procs += workers.values()
        traffic = Traffic(
            Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}),
            f"payments-{suffix}",
            f"heartbeats-{suffix}",
        )
        start = time.monotonic()
        for s in range(TRAFFIC_S):
            if s == 27:
                workers["w2"].send_signal(signal.SIGKILL)  # mid-incident: stuck orders, the bank down
            if s == 37:
                workers["w2"] = _worker(three, f"g3-{suffix}", "w2", tmp_path / "w2.log")
                procs.append(workers["w2"])
            traffic.second(s)
            time.sleep(max(0.0, start + s + 1 - time.monotonic()))
        time.sleep(25)  # the tail: recovery, rollups resolving, the killed worker's partitions caught up
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    logs = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in tmp_path.glob("*.log"))
    runs = {run: _read(kafka_bootstrap, f"findings-{suffix}-{run}") for run in ("one", "three")}

    for run, findings in runs.items():
        assert findings, f"{run}: no findings at all\n{logs}"
        ids = Counter(f.event.id for f in findings)
        assert max(ids.values()) == 1, f"{run}: findings published twice: {ids.most_common(3)}\n{logs}"
        opened = Counter(f.finding.fingerprint for f in findings if f.finding.state == "open" and is_incident(f))
        assert opened["paid_but_pending_incident:alipay"] == 1, (run, opened, logs)
        assert opened["duplicate_charge_incident:wechatpay"] == 1, (run, opened)
        assert opened["service_down:compensation-job"] == 1, (run, opened)
        assert opened["channel_health:bank_b"] >= 1, (run, opened)
        # nothing pages on the healthy channels
        assert not [fp for fp in opened if fp.endswith((":alipay", ":wechatpay")) and "channel_health" in fp]
        pending = {
            f.payment.order_id for f in findings if f.finding.kind == "paid_but_pending" and f.finding.state == "open"
        }
        assert pending == {f"alipay-{s}-{i}" for s in range(10, 25) for i in range(10)}, run
        duplicates = {f.payment.order_id for f in findings if f.finding.kind == "duplicate_charge"}
        assert duplicates == {f"wechatpay-{s}-{i}" for s in range(30, 34) for i in range(3)}, run

    def channel(findings):
        return sorted(
            (f.timestamp, f.finding.fingerprint, f.finding.state, f.finding.level)
            for f in findings
            if f.finding.kind
            in ("channel_health", "error_code_spike", "paid_but_pending_incident", "duplicate_charge_incident")
        )

    assert channel(runs["one"]) == channel(runs["three"])
    health = [(state, level) for _, fp, state, level in channel(runs["one"]) if fp == "channel_health:bank_b"]
    assert health[0][0] == "open" and health[-1] == ("resolved", "healthy")


@pytest.mark.kafka
def test_key_partition_is_where_librdkafka_puts_a_key(kafka_bootstrap):
    from paywatch.kafka import key_partition

    topic = f"keys-{uuid.uuid4().hex[:8]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=6)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    landed: dict[str, int] = {}
    for key in ("compensation-job", "order-service", "alipay", "bank_b", "paywatch-detect", "x"):
        producer.produce(
            topic,
            b"{}",
            key.encode(),
            on_delivery=lambda err, msg: landed.__setitem__(msg.key().decode(), msg.partition()),
        )
    producer.flush(10)
    assert landed == {key: key_partition(key, 6) for key in landed} and len(landed) == 6
