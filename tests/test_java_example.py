"""The Java example (examples/java/) end to end: a real Log4j 2 service on real Kafka, Elasticsearch
and Alertmanager, every paywatch stage a real process.

The service is built with Maven (first build downloads from Maven Central into ~/.m2) and run as a
subprocess. It knows nothing of paywatch: Log4j's Kafka appender writes its log calls as ECS JSON
(the built-in EcsLayout), payment fields from the ThreadContext. Some of its orders are charged but
never marked paid; the test proves its lines reach Elasticsearch through `paywatch collect`, and
that `paywatch detect` + `paywatch alert` page the paid-but-pending incident through Alertmanager.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from alerts_support import Receiver, am_config, posts
from confluent_kafka import Consumer
from stack_support import Stages, stack_config

from paywatch.elastic import data_stream
from paywatch.kafka import consumer_config

pytestmark = [pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.alertmanager, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "java"
CHANNEL = "alipay"
HEALTHY, STUCK = 3, 5
DETECTORS = {
    "window_s": 1.0,
    "allowed_lateness_s": 1.0,
    "incident_span_windows": 10,
    "pending_incident_min_orders": 3,
    "channels": {CHANNEL: {"paid_grace_s": 5.0}},
}


@pytest.fixture(scope="module")
def java_service() -> list[str]:
    """The command that runs the built example (built once per test session)."""
    mvn = shutil.which("mvn")
    assert mvn and shutil.which("java"), "Maven and a JDK 17 are needed: apt-get install maven openjdk-17-jdk-headless"
    build = subprocess.run(
        [mvn, "-q", "-B", "package", "-DskipTests"], cwd=EXAMPLE, capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    classpath = os.pathsep.join(
        [str(EXAMPLE / "target" / "payment-service.jar"), str(EXAMPLE / "target" / "lib" / "*")]
    )
    return ["java", "-cp", classpath, "dev.paywatch.example.PaymentService"]


def test_a_log4j_service_is_stored_judged_and_paged(
    java_service, kafka_bootstrap, es_url, es, alertmanager_factory, tmp_path
):
    with Receiver() as receiver:
        am = alertmanager_factory(am_config(receiver.url))
        config, config_path = stack_config(
            tmp_path,
            kafka_bootstrap,
            es_url,
            detectors=DETECTORS,
            alerts={"alertmanager": {"urls": [am.url]}, "resend_interval_s": 5, "tick_interval_s": 1},
        )
        topics, namespace = config.kafka.topics, config.elasticsearch.namespace
        stages = Stages(config_path, tmp_path)
        env = {
            **os.environ,
            "PAYWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "PAYWATCH_PAYMENTS_TOPIC": topics.payments,
            "PAYWATCH_HEARTBEATS_TOPIC": topics.heartbeats,
            "SERVICE_NAME": "payment-gateway",
            "SERVICE_INSTANCE_ID": "gw-java-1",
        }
        args = ["--healthy", str(HEALTHY), "--stuck", str(STUCK), "--order-prefix", namespace, "--beat-interval", "1"]
        service = subprocess.Popen(
            [*java_service, *args], env=env, stdout=(tmp_path / "java.log").open("wb"), stderr=subprocess.STDOUT
        )
        try:
            stages.start("collect")
            stages.start("detect", "--consumer-group", f"detect-{namespace}")
            stages.start("alert")
            firing = stages.wait_for(
                lambda: [p for p in posts(receiver.received) if p["status"] == "firing"],
                240,
                "Alertmanager to deliver the PaidButPending page for the Java service's stuck orders",
            )
            assert service.poll() is None, (tmp_path / "java.log").read_text()

            def stored(dataset: str) -> list[dict]:
                es.indices.refresh(index=data_stream(dataset, namespace), ignore_unavailable=True)
                hits = es.search(index=data_stream(dataset, namespace), size=200, ignore_unavailable=True)
                return [h["_source"] for h in hits["hits"]["hits"]]

            expected = HEALTHY * 4 + STUCK * 3
            payments = stages.wait_for(
                lambda: (docs := stored("paywatch.payment")) and len(docs) >= expected and docs,
                120,
                f"the Java service's {expected} payment events in Elasticsearch",
            )
            service.send_signal(signal.SIGTERM)
            assert service.wait(60) == 128 + signal.SIGTERM  # how a JVM exits on SIGTERM, its hooks run
            beats = stages.wait_for(
                lambda: (
                    [b for b in stored("paywatch.heartbeat") if b["service"]["name"] == "payment-gateway"]
                    if any(b["heartbeat"]["status"] == "stopping" for b in stored("paywatch.heartbeat"))
                    else None
                ),
                60,
                "the Java service's heartbeats, the last one 'stopping', in Elasticsearch",
            )
        finally:
            if service.poll() is None:
                service.kill()
            stages.stop_all()

    [page] = firing[:1]
    assert page["groupLabels"] == {"alertname": "PaidButPending", "channel": CHANNEL}
    assert len(payments) == expected  # each line stored once
    by_order: dict[str, list[str]] = {}
    for doc in payments:
        by_order.setdefault(doc["payment"]["order_id"], []).append(doc["event"]["action"])
    assert sorted(by_order[f"{namespace}-stuck-0"]) == ["channel_callback", "order_created", "payment_requested"]
    assert "order_paid" in by_order[f"{namespace}-ok-0"]
    callback = next(d for d in payments if d["event"]["action"] == "channel_callback")
    # what paywatch read, typed as the contract says; what it does not read (ecs.version,
    # log.logger, process.thread.name) left behind
    assert callback["payment"]["amount_minor"] >= 1000 and callback["payment"]["channel"] == CHANNEL
    assert callback["service"] == {"name": "payment-gateway", "instance": {"id": "gw-java-1"}}
    assert callback["log"] == {"level": "info"} and "ecs" not in callback and "process" not in callback
    seqs = sorted(b["heartbeat"]["seq"] for b in beats)
    assert seqs == list(range(len(seqs))) and len(seqs) >= 3

    # Log4j keyed every payment message by its business order (the ThreadContext lookup in log4j2.xml)
    consumer = Consumer(consumer_config(config.kafka, f"check-keys-{namespace}", **{"enable.partition.eof": True}))
    consumer.subscribe([topics.payments])
    keys: list[tuple[bytes, str]] = []
    try:
        while len(keys) < expected:
            msg = consumer.poll(10)
            assert msg is not None, f"only {len(keys)} payment messages on {topics.payments}"
            if msg.error() is None:
                keys.append((msg.key(), msg.value().decode()))
    finally:
        consumer.close()
    for key, value in keys:
        assert f'"payment.order_id":"{key.decode()}"' in value
