"""The compensator on the real servers: the Kafka stage turns a paid-but-pending finding into
a signed query at a fake Alipay, a channel_query_result event and a repair action; the audit
trail lands in Elasticsearch with the shipped mapping and is searchable by order id."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hung_peer import Hung
from test_compensation_channels import PLATFORM, Receiver, Truth, keypair, secrets_env  # noqa: F401  (fixtures)

from paywatch.app.config import Config
from paywatch.compensation.driver import CompensationDriver
from paywatch.compensation.runtime import CompensationHandler
from paywatch.compensation.settings import ChannelQuerySettings, CompensationSettings, OrderWebhookSettings
from paywatch.contract import decode
from paywatch.finding import AttemptEvidence, Evidence, FindingPayment, encode_finding, make_finding
from paywatch.kafka import consumer_config, ensure_topics, key_partition, producer_config
from paywatch.settings import KafkaSettings, Topics
from paywatch.simulator.channel_api import ChannelApiServer
from paywatch.stage import Stage
from paywatch.webhooks import verify


def stuck_finding(order: str, attempt: str, state: str = "open"):
    return make_finding(
        at=datetime.now(UTC),
        kind="paid_but_pending",
        state=state,
        fingerprint=f"paid_but_pending:{order}",
        severity="warning",
        summary="charged but not recorded as paid",
        evidence=Evidence(attempts=[AttemptEvidence(attempt_id=attempt, channel="alipay", event_id="cb-1")]),
        payment=FindingPayment(order_id=order, attempt_id=attempt, channel="alipay"),
    )


def config_for(bootstrap: str, alipay_url: str, order_webhook_url: str | None = None) -> Config:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{name: f"{value}.{suffix}" for name, value in Topics().model_dump().items()})
    comp = CompensationSettings(
        channels={"alipay": ChannelQuerySettings(adapter="alipay", base_url=alipay_url, alipay={"app_id": "2014"})},
        consumer_group=f"paywatch-compensator-{suffix}",
        order_webhook=OrderWebhookSettings(url=order_webhook_url),
    )
    return Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, topics=topics), compensation=comp)


def collect(bootstrap: str, topics: list[str], want, timeout_s: float = 60) -> list[tuple[str, bytes]]:
    consumer = Consumer(consumer_config(KafkaSettings(bootstrap_servers=bootstrap), f"t-{uuid.uuid4().hex}"))
    consumer.subscribe(topics)
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want(got):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.topic(), msg.value()))
    finally:
        consumer.close()
    return got


def _stage(config: Config, driver: CompensationDriver, batch: int = 1000) -> tuple[Stage, threading.Thread]:
    t = config.kafka.topics
    stage = Stage(
        config.kafka,
        config.compensation.consumer_group,
        [t.findings, t.payments],
        CompensationHandler(config, driver),
        tick_s=0.2,
        batch=batch,
    )
    runner = threading.Thread(target=stage.run, daemon=True)
    runner.start()
    return stage, runner


def test_stage_repairs_a_confirmed_stuck_order_over_kafka(kafka_bootstrap, secrets_env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PAYWATCH_ORDER_WEBHOOK_SECRET", "whsec-order-system")
    truth = Truth()
    truth.add("ali-1", "paid", channel="alipay", order_id="order-k1")
    server = ChannelApiServer("alipay", truth.get, public_key=secrets_env[1], platform_key=PLATFORM).start()
    receiver = Receiver()  # the order system: gets the repair, signed
    config = config_for(kafka_bootstrap, server.url, receiver.url)
    t = config.kafka.topics
    ensure_topics(config.kafka, [t.findings, t.payments, t.actions, t.heartbeats], partitions=1)
    driver = CompensationDriver(config.compensation, "test-1")
    stage, runner = _stage(config, driver)
    try:
        producer = Producer(producer_config(config.kafka))
        producer.produce(t.findings, encode_finding(stuck_finding("order-k1", "ali-1")), b"order-k1")
        producer.flush(10)

        def done(got):
            topics = {topic for topic, _ in got}
            repaired = any(topic == t.actions and b'"repair"' in value for topic, value in got)
            return repaired and {t.payments, t.heartbeats} <= topics

        got = collect(kafka_bootstrap, [t.actions, t.payments, t.heartbeats], done)
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stage.stop.set()
        runner.join(30)
        driver.close()
        server.stop()
        receiver.stop()
    actions = [json.loads(v) for topic, v in got if topic == t.actions]
    assert [a["action"]["type"] for a in actions] == ["query", "repair"]
    assert actions[1]["payment"]["order_id"] == "order-k1"
    (result,) = [decode(v) for topic, v in got if topic == t.payments]
    assert result.event.action == "channel_query_result" and result.event.outcome == "success"
    assert result.payment.status == "TRADE_SUCCESS"
    beat = next(decode(v) for topic, v in got if topic == t.heartbeats)
    assert beat.service.name == "paywatch-compensator" and beat.heartbeat.checks == {"circuit:alipay": "ok"}
    assert server.count("ali-1") == 1
    ((headers, body),) = receiver.received  # the repair, once, verified with the order system's key
    verify("whsec-order-system", body, headers, now=datetime.now(UTC).timestamp())
    assert json.loads(body) == actions[1]


def test_a_restarted_compensator_asks_again_what_its_predecessor_never_heard_back(kafka_bootstrap, secrets_env):  # noqa: F811
    """The channel hangs on the query for order-k2 and the compensator stops (its offsets
    committed past the finding); the channel comes back on the same address. The next compensator
    of the group re-reads the findings of its horizon, asks again and repairs order-k2, once; the
    order-k3 finding, resolved before anyone asked, is never asked about: the second compensator
    reads one finding at a time and ticks right after the first (order-k3's), so a query sent
    before the rebuild has caught up would show."""
    truth = Truth()
    truth.add("ali-2", "paid", channel="alipay", order_id="order-k2")
    truth.add("ali-3", "paid", channel="alipay", order_id="order-k3")
    hung = Hung()
    config = config_for(kafka_bootstrap, hung.url)
    t = config.kafka.topics
    ensure_topics(config.kafka, [t.findings, t.payments, t.actions, t.heartbeats], partitions=1)
    producer = Producer(producer_config(config.kafka))
    k2, k3, k3_resolved = (
        stuck_finding("order-k2", "ali-2"),
        stuck_finding("order-k3", "ali-3"),
        stuck_finding("order-k3", "ali-3", "resolved"),
    )
    for finding in (k3, k2, k3_resolved):
        producer.produce(t.findings, encode_finding(finding), finding.payment.order_id.encode())
    producer.flush(10)

    first = CompensationDriver(config.compensation, "first")
    stage, runner = _stage(config, first)
    deadline = time.monotonic() + 60
    while not hung.connections and time.monotonic() < deadline:
        time.sleep(0.1)
    stage.stop.set()
    runner.join(30)
    first.close(2)
    hung.stop()
    assert hung.connections  # order-k2 was asked about and never heard back

    port = int(hung.url.rsplit(":", 1)[1])
    server = ChannelApiServer("alipay", truth.get, public_key=secrets_env[1], platform_key=PLATFORM, port=port).start()
    second = CompensationDriver(config.compensation, "second")
    stage, runner = _stage(config, second, batch=1)
    try:
        got = collect(kafka_bootstrap, [t.actions], lambda got: any(b'"repair"' in v for _, v in got))
        time.sleep(2)  # a second repair, or a query about order-k3, would show by now
        got += collect(kafka_bootstrap, [t.actions], lambda got: False, timeout_s=3)
    finally:
        stage.stop.set()
        runner.join(30)
        second.close()
        server.stop()
    actions = {json.loads(v)["event"]["id"]: json.loads(v) for _, v in got}
    kinds = sorted((a["action"]["type"], a["payment"]["order_id"]) for a in actions.values())
    assert kinds == [("query", "order-k2"), ("repair", "order-k2")]
    assert (server.count("ali-2"), server.count("ali-3")) == (1, 0)


def test_a_revoked_findings_partition_hands_its_orders_over(secrets_env):  # noqa: F811
    """Another compensator of the group now owns those orders' findings and rebuilds them; this one
    forgets them, or both would ask the channel and spend its budget twice."""
    config = config_for("127.0.0.1:1", "http://127.0.0.1:9")
    driver = CompensationDriver(config.compensation, "leaving")
    handler = CompensationHandler(config, driver)
    handler.partitions = 6
    orders = [f"order-{n}" for n in range(12)]
    try:
        for order in orders:
            driver.on_finding(stuck_finding(order, f"ali-{order}"))
        revoked = key_partition(orders[0], 6)
        handler.on_revoke([TopicPartition(config.kafka.topics.findings, revoked)])
        left = {task.order_id for task in driver.compensator.tasks.values()}
    finally:
        driver.close()
    assert left == {o for o in orders if key_partition(o, 6) != revoked}
    assert orders[0] not in left and left


@pytest.mark.elasticsearch
def test_audit_trail_is_stored_with_the_shipped_mapping_and_searchable_by_order(es, secrets_env):  # noqa: F811
    import asyncio

    from test_compensation_channels import comp_settings, fake, finding, run

    from paywatch.collectors.templates import install_templates
    from paywatch.elastic import data_stream

    truth = Truth()
    truth.add("wx-9", "paid")
    server = fake("wechatpay", truth, secrets_env, not_found_first=1)
    settings = comp_settings({"wechatpay": server})
    stuck = finding("paid_but_pending", "order-es-1", "wx-9", "wechatpay", [("wechatpay", "wx-9")])
    from datetime import timedelta

    from test_compensation_channels import T0

    effects, _ = asyncio.run(run(settings, [stuck], times=(T0, T0 + timedelta(minutes=10))))
    server.stop()
    install_templates(es)
    stream = data_stream("paywatch.action", f"t{uuid.uuid4().hex[:8]}")
    for doc in effects.actions:
        es.index(index=stream, id=doc["event"]["id"], document=doc, op_type="create")
    es.indices.refresh(index=stream)
    hits = es.search(index=stream, query={"term": {"payment.order_id": "order-es-1"}}, sort=[{"@timestamp": "asc"}])
    types = sorted(h["_source"]["action"]["type"] for h in hits["hits"]["hits"])
    assert types == ["query", "query", "repair"]
    mapping = next(iter(es.indices.get_mapping(index=stream).values()))["mappings"]["properties"]
    assert mapping["query"]["properties"]["response_body"]["index"] is False
    agg = es.search(index=stream, size=0, aggs={"t": {"terms": {"field": "action.type"}}})
    assert {b["key"]: b["doc_count"] for b in agg["aggregations"]["t"]["buckets"]} == {"query": 2, "repair": 1}
    es.indices.delete_data_stream(name=stream)
