"""End to end on real Kafka, Elasticsearch and Alertmanager, every paywatch stage a real process.

A callback outage on alipay: the channel charges the customers and its callbacks are logged by
the platform's callback receiver, but the queue that applies them to orders is jammed, so the
orders stay pending. `paywatch detect` reports each order paid-but-pending and the incident;
`paywatch alert` pages once through Alertmanager; `paywatch compensate` asks alipay's query API
(a local fake speaking Alipay's documented shapes, answering from the channel's own records),
publishes the channel_query_result and a repair action; the order system (not paywatch: a
stand-in here, using the SDK like any service) marks the orders paid; the detectors resolve
the orders and the incident; Alertmanager delivers one resolved notification. `paywatch
collect` stores all of it, and `paywatch orders show` finds the whole trail by order id.

Timings are shortened through the config only (paid grace, query schedule, windows,
Alertmanager grouping); every wait polls and says what it waited for.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from alerts_support import Receiver, am_config, posts
from confluent_kafka import Consumer
from polling import wait_for
from stack_support import PAYWATCH, Stages, stack_config

from paywatch.app.config import Config
from paywatch.collectors.sdk import open_logger
from paywatch.elastic import ElasticHistory, data_stream
from paywatch.kafka import consumer_config
from paywatch.simulator.channel_api import (
    ChannelApiServer,
    merchant_keypair,  # Alipay requests are signed and verified
)
from paywatch.simulator.truth import ChannelRecord

pytestmark = [pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.alertmanager, pytest.mark.slow]

CHANNEL = "alipay"
STUCK = 6  # orders charged during the outage
HEALTHY = 4  # orders before it, applied normally
DETECTORS = {
    "window_s": 1.0,
    "allowed_lateness_s": 1.0,
    "incident_span_windows": 10,
    "pending_incident_min_orders": 3,
    "incident_resolve_after": 5,
    "channels": {CHANNEL: {"paid_grace_s": 5.0}},
}
# A paid-but-pending finding is queried as soon as it arrives (the detector already waited the paid
# grace); the offsets are when to ask again, shortened from minutes to seconds.
SCHEDULE = {"offsets_s": [5, 15, 30, 60], "jitter": 0, "error_retry_s": 2, "not_found_grace_s": 60}


class OrderSystem:
    """The business's order service, outside paywatch: applies repair actions from paywatch.actions
    by marking the order paid, and says so with an `order_paid` event through the SDK."""

    def __init__(self, config: Config) -> None:
        self.topic = config.kafka.topics.actions
        self.consumer = Consumer(consumer_config(config.kafka, f"order-system-{config.elasticsearch.namespace}"))
        self.log = open_logger("order-service", config=config, instance_id="order-service-1")
        self.repairs: list[dict] = []
        self.marked_paid: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OrderSystem:
        self.consumer.subscribe([self.topic])
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.consumer.close()
        self.log.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            doc = json.loads(msg.value())
            action, payment = doc.get("action", {}), doc.get("payment", {})
            if action.get("type") != "repair" or action.get("dry_run") or action.get("to_status") != "paid":
                continue
            self.repairs.append(doc)
            if payment["order_id"] in self.marked_paid:
                continue  # a re-delivered repair is applied once
            self.marked_paid.append(payment["order_id"])
            self.log.payment(
                "order_paid",
                order_id=payment["order_id"],
                attempt_id=payment.get("attempt_id"),
                channel=payment.get("channel"),
                outcome="success",
                status="success",
                message=f"marked paid by repair {doc['event']['id']}",
            )
            self.log.flush(10)
            self.consumer.commit(msg)


class Platform:
    """The payment platform's own services emitting through the SDK: checkout, gateway, callback receiver."""

    def __init__(self, config: Config, truth: dict[str, ChannelRecord], orders: OrderSystem) -> None:
        self.checkout = open_logger("checkout", config=config, instance_id="checkout-1")
        self.gateway = open_logger("payment-gateway", config=config, instance_id="gateway-1")
        self.callbacks = open_logger("callback-receiver", config=config, instance_id="callback-1")
        self.orders = orders.log
        self.truth = truth

    def pay(self, order_id: str, amount: int, applied: bool) -> None:
        attempt = f"{order_id}-a1"
        common = {"order_id": order_id, "channel": CHANNEL, "amount_minor": amount, "currency": "CNY"}
        self.checkout.payment("order_created", order_id=order_id, amount_minor=amount, currency="CNY", status="unpaid")
        self.gateway.payment(
            "payment_requested", attempt_id=attempt, method="wallet", outcome="unknown", status="confirming", **common
        )
        now = datetime.now(UTC)
        self.truth[attempt] = ChannelRecord(
            channel=CHANNEL,
            order_id=order_id,
            attempt_id=attempt,
            amount_minor=amount,
            currency="CNY",
            created_at=now,
            status="paid",
            paid_at=now,
        )
        self.callbacks.payment("channel_callback", attempt_id=attempt, outcome="success", status="success", **common)
        if applied:
            self.orders.payment("order_paid", attempt_id=attempt, outcome="success", status="success", **common)

    def close(self) -> None:
        for log in (self.checkout, self.gateway, self.callbacks):
            log.close()


def test_callback_outage_pages_once_is_repaired_by_queries_and_resolves(
    kafka_bootstrap, es_url, es, alertmanager_factory, tmp_path
):
    began = time.monotonic()
    private, public = merchant_keypair()
    truth: dict[str, ChannelRecord] = {}
    with Receiver() as receiver, ChannelApiServer("alipay", truth.get, public_key=public) as alipay:
        am = alertmanager_factory(am_config(receiver.url))
        config, config_path = stack_config(
            tmp_path,
            kafka_bootstrap,
            es_url,
            detectors=DETECTORS,
            alerts={
                "alertmanager": {"urls": [am.url]},
                "resend_interval_s": 5,
                "tick_interval_s": 1,
            },
            compensation={
                "channels": {
                    CHANNEL: {"adapter": "alipay", "base_url": alipay.url, "alipay": {"app_id": "2014072300007148"}}
                },
                "schedule": SCHEDULE,
                "budget": {"qps": 20, "concurrency": 4},
            },
        )
        namespace = config.elasticsearch.namespace
        stages = Stages(config_path, tmp_path)
        try:
            stages.start("collect")
            stages.start("detect", "--consumer-group", f"detect-{namespace}")
            stages.start("alert")
            # the fake Alipay signs its answers with its own platform key: the stage verifies each one
            keys = {"PAYWATCH_ALIPAY_PRIVATE_KEY": private, "PAYWATCH_ALIPAY_PUBLIC_KEY": alipay.platform_public_key}
            stages.start("compensate", env=keys)
            with OrderSystem(config) as order_system:
                platform = Platform(config, truth, order_system)
                # no waiting for the stages to join their groups: what arrives meanwhile must be read too
                for i in range(HEALTHY):
                    platform.pay(f"ok-{namespace}-{i}", 1000 + i, applied=True)
                time.sleep(3)
                stuck = [f"stuck-{namespace}-{i}" for i in range(STUCK)]
                for i, order in enumerate(stuck):  # the outage: charged, called back, never applied
                    platform.pay(order, 2000 + i, applied=False)

                # one page at Alertmanager for the incident
                firing = stages.wait_for(
                    lambda: [p for p in posts(receiver.received) if p["status"] == "firing"],
                    240,
                    "Alertmanager to deliver the PaidButPending page",
                )
                # compensating queries, repairs, and the order system marking every stuck order paid
                stages.wait_for(
                    lambda: sorted(order_system.marked_paid) == sorted(stuck),
                    240,
                    f"repair actions for all {STUCK} stuck orders (got {order_system.marked_paid})",
                )
                # the incident resolves: one resolved notification
                stages.wait_for(
                    lambda: [p for p in posts(receiver.received) if p["status"] == "resolved"],
                    240,
                    "Alertmanager to deliver the resolved notification",
                )
                time.sleep(5)  # a few group intervals: nothing more may arrive
                platform.close()
        finally:
            stages.stop_all()

    delivered = posts(receiver.received)
    assert [p["status"] for p in delivered] == ["firing", "resolved"], delivered
    [page] = firing
    assert page["groupLabels"] == {"alertname": "PaidButPending", "channel": CHANNEL}
    assert delivered[1]["alerts"][0]["fingerprint"] == page["alerts"][0]["fingerprint"]
    # the queries really reached the channel (signature verified by it), about the stuck orders only
    answered = {r.attempt_id for r in alipay.requests if r.status == 200}
    assert answered == {f"{o}-a1" for o in stuck}, alipay.requests
    assert sorted({r["payment"]["order_id"] for r in order_system.repairs}) == sorted(stuck)

    # the whole trail of a stuck order named by the page, from Elasticsearch, through the operator's command
    def paged_orders() -> list[str]:
        hits = es.search(
            index=data_stream("paywatch.alert", namespace),
            query={"term": {"alert.status": "firing"}},
            sort=[{"@timestamp": "asc"}],
            size=1,
            ignore_unavailable=True,
        )["hits"]["hits"]
        return hits[0]["_source"].get("payment", {}).get("order_id", []) if hits else []

    paged = wait_for(paged_orders, 120, "the firing alert document (naming its orders) in Elasticsearch", every=2)
    assert set(paged) <= set(stuck)
    order = paged[0]

    def trail() -> list[dict]:
        out = subprocess.run(
            [PAYWATCH, "orders", "show", order, "--json", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    missing: set[str] = set()

    def complete() -> list[dict] | None:
        docs = trail()
        missing.clear()
        missing.update(want - {_what(d) for d in docs})
        return None if missing else docs

    want = {
        "payment:order_created",
        "payment:payment_requested",
        "payment:channel_callback",
        "payment:channel_query_result",
        "payment:order_paid",
        "finding:paid_but_pending:open",
        "finding:paid_but_pending:resolved",
        "action:query",
        "action:repair",
        "alert:firing",
        "alert:resolved",
    }
    try:
        docs = wait_for(complete, 180, f"the whole trail of {order} in Elasticsearch (orders show --json)", every=3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nmissing from the trail: {sorted(missing)}") from None
    assert [d["event"]["id"] for d in docs] == [
        d["event"]["id"] for d in ElasticHistory(es, namespace).order_timeline(order)
    ]
    # in the order the story happens: stuck → asked → repaired → paid → resolved; the page (a
    # separate stage, racing the compensator) after the order was stuck, resolved after it fired
    first = {}
    for d in docs:
        first.setdefault(_what(d), datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00")))
    chain = [
        "payment:channel_callback",
        "finding:paid_but_pending:open",
        "action:query",
        "action:repair",
        "payment:order_paid",
        "finding:paid_but_pending:resolved",
    ]
    times = [first[step] for step in chain]
    assert times == sorted(times), list(zip(chain, times, strict=True))
    # the alert resolves at the event time of its last source, which may be the incident finding's
    # window edge (whole seconds): after the page, not necessarily after the order's own resolution
    assert first["finding:paid_but_pending:open"] <= first["alert:firing"] < first["alert:resolved"]
    print(f"e2e: {time.monotonic() - began:.0f} s")


def _what(doc: dict) -> str:
    dataset = doc.get("event", {}).get("dataset", "")
    if dataset == "paywatch.payment":
        return f"payment:{doc['event']['action']}"
    if dataset == "paywatch.finding":
        return f"finding:{doc['finding']['kind']}:{doc['finding']['state']}"
    if dataset == "paywatch.action":
        return f"action:{doc['action']['type']}"
    if dataset == "paywatch.alert":
        return f"alert:{doc['alert']['status']}"
    return dataset
