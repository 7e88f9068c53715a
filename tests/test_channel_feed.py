"""The channel-health feed for routers, on both backends: a channel that degrades, goes down and
recovers shows exactly degraded → down → healthy, per channel and per channel × method, on the
compacted Kafka topic (`paywatch detect`, a real process on the real Kafka) and on the embedded
server's `GET /v1/channels` (real HTTP, authenticated). `GET /v1/orders/{id}` returns the trail
`paywatch orders show --json` prints. examples/router.py is the router the docs show; it is run
against the embedded server here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource
from stack_support import NO_ALERTMANAGER, PAYWATCH, Stages, produce, stack_config

from paywatch.app.config import Config
from paywatch.app.demo import _per_second
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.queries import Queries
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import ManualClock
from paywatch.contract import Event, EventMeta, Payment, Service, ServiceInstance
from paywatch.detectors.channel_feed import ChannelBoard, decode_status
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.kafka import consumer_config

ROOT = Path(__file__).resolve().parents[1]
CHANNEL, METHOD = "bank_b", "card"
KEYS = [CHANNEL, f"{CHANNEL}/{METHOD}"]
# (seconds, share of attempts the channel fails): fine, failing often, failing always, fine again
PHASES = [(60, 0.0), (40, 0.4), (40, 1.0), (120, 0.0)]
PER_SECOND = 10
STORY = ["degraded", "down", "healthy"]
DETECTORS = {"health_by_method": True, "channel_feed_interval_s": 2.0}
TOKEN = "router-token"


def channel_story(start: datetime) -> list[Event]:
    """Attempts at bank_b by card, PER_SECOND a second, failing (the channel's fault) as PHASES say;
    the paid ones are marked paid at once (nothing else to page about)."""
    events: list[Event] = []
    service = Service(name="payment-gateway", instance=ServiceInstance(id="gw-1"))
    second = 0
    for seconds, failing in PHASES:
        for _ in range(seconds):
            for i in range(PER_SECOND):
                at = start + timedelta(seconds=second, milliseconds=90 * i)
                order = f"o-{second}-{i}"
                pay = Payment(order_id=order, attempt_id=f"{order}-a1", channel=CHANNEL, method=METHOD)
                fails = i < failing * PER_SECOND

                def event(action: str, ms: int, outcome: str, pay: Payment = pay, at: datetime = at) -> Event:
                    return Event(
                        timestamp=at + timedelta(milliseconds=ms),
                        event=EventMeta(
                            id=f"{pay.order_id}:{action}", dataset="paywatch.payment", action=action, outcome=outcome
                        ),
                        service=service,
                        payment=pay,
                    )

                events.append(event("payment_requested", 0, "unknown"))
                if fails:
                    failed = Payment(**{**_fields(pay), "error_code": "BANK_TIMEOUT", "error_category": "channel"})
                    events.append(event("channel_callback", 40, "failure", failed))
                else:
                    events.append(event("channel_callback", 40, "success"))
                    events.append(event("order_paid", 60, "success"))
            second += 1
    return events


def _fields(payment: Payment) -> dict:
    return {f: getattr(payment, f) for f in payment.__struct_fields__ if getattr(payment, f) is not None}


def collapse(statuses: list[dict]) -> dict[str, list[dict]]:
    """Per key, the distinct states in order (the periodic re-publication repeats the current one)."""
    out: dict[str, list[dict]] = {}
    for s in statuses:
        seen = out.setdefault(s["key"], [])
        if not seen or (seen[-1]["level"], seen[-1]["since"]) != (s["level"], s["since"]):
            seen.append(s)
    return out


def test_the_board_follows_channel_health_findings():
    config = Config.model_validate({"detectors": DETECTORS})
    events = channel_story(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    board = ChannelBoard()
    changes = [s for f in replay_events(events, DetectionEngine(config.detectors), drain_s=30)
               if (s := board.on_finding(f)) is not None]  # fmt: skip
    for key in KEYS:
        levels = [s.level for s in changes if s.key == key]
        assert levels == STORY, (key, levels)
    down = next(s for s in changes if s.key == CHANNEL and s.level == "down")
    assert down.failure_rate_lower_bound >= 0.9 and down.failures > 0 and down.method is None
    assert down.reason.startswith(f"channel {CHANNEL} is down")
    assert [s.key for s in board.snapshot()] == KEYS and all(s.level == "healthy" for s in board.snapshot())


def _serve(tmp: Path, events: list[Event]) -> tuple[ManualClock, Pipeline, IngestServer, SqliteStore]:
    """The embedded backend's pipeline on a manual clock, behind a real HTTP server."""
    config = Config.model_validate({"detectors": DETECTORS, **NO_ALERTMANAGER})
    clock = ManualClock(events[0].timestamp)
    store = SqliteStore(tmp / "embedded.sqlite", clock=clock)
    pipeline = Pipeline(config, store, started_at=clock.now())
    server = IngestServer(
        pipeline.ingest, store, TOKEN, "127.0.0.1", 0, 1 << 24, queries=Queries(pipeline.channels, store)
    )
    server.start()
    return clock, pipeline, server, store


def _embedded_feed(tmp: Path, events: list[Event]) -> tuple[list[dict], IngestServer, SqliteStore]:
    clock, pipeline, server, store = _serve(tmp, events)
    seen: list[dict] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=auth) as http:
        second = clock.now()
        for second, batch in _per_second(iter(events)):
            clock.set(second)
            pipeline.ingest(batch)
            pipeline.tick(second)
            reply = http.get("/v1/channels").json()
            assert reply["version"] == "1"
            seen += reply["channels"]
        for _ in range(30):
            second += timedelta(seconds=1)
            clock.set(second)
            pipeline.tick(second)
            seen += http.get("/v1/channels").json()["channels"]
    return seen, server, store


def test_embedded_get_channels_shows_down_and_recovery_and_orders_give_the_trail(tmp_path):
    events = channel_story(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    seen, server, store = _embedded_feed(tmp_path, events)
    try:
        states = collapse(seen)
        for key in KEYS:
            assert [s["level"] for s in states[key]] == STORY, key
        # authenticated like ingest
        assert httpx.get(f"{server.url}/v1/channels").status_code == 401
        assert httpx.get(f"{server.url}/v1/channels", headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # the order's trail, as `paywatch orders show --json` prints it
        order = "o-70-1"  # failed at bank_b in the degraded phase
        reply = httpx.get(f"{server.url}/v1/orders/{order}", headers=auth)
        assert reply.status_code == 200
        config_path = tmp_path / "paywatch.yaml"
        config_path.write_text(f"embedded:\n  database: {tmp_path / 'embedded.sqlite'}\n")
        shown = subprocess.run(
            [PAYWATCH, "orders", "show", order, "--json", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert reply.json()["trail"] == [json.loads(line) for line in shown.stdout.splitlines()]
        assert [d["event"]["action"] for d in reply.json()["trail"]] == ["payment_requested", "channel_callback"]
        missing = httpx.get(f"{server.url}/v1/orders/no-such-order", headers=auth)
        assert missing.status_code == 404 and "no-such-order" in missing.json()["error"]
    finally:
        server.stop()
        store.close()


@pytest.mark.slow
def test_kafka_channel_health_topic_shows_down_and_recovery(kafka_bootstrap, tmp_path):
    config, config_path = stack_config(tmp_path, kafka_bootstrap, "http://127.0.0.1:9", detectors=DETECTORS)
    total = sum(s for s, _ in PHASES)
    events = channel_story(datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=total + 5))
    topic = config.kafka.topics.channel_health
    stages = Stages(config_path, tmp_path)
    consumer = Consumer(consumer_config(config.kafka, f"router-{config.elasticsearch.namespace}"))
    consumer.subscribe([topic])
    published: list[dict] = []
    try:
        # the whole story is on the topic before the stage reads it: a backlog, judged by its
        # producers' watermark. Produced while the stage is already live, a pause in producing
        # (a busy machine) lets the idle partition's clock jump to the wall clock, and the rest
        # of a story dated minutes ago is then judged at its arrival, as late events are.
        assert produce(config, events) == len(events)
        stages.start("detect", "--consumer-group", f"detect-{config.elasticsearch.namespace}")

        def read() -> list[dict]:
            while (msg := consumer.poll(0.5)) is not None:
                if msg.error() is None:
                    status = decode_status(msg.value())
                    assert msg.key().decode() == status.key  # keyed by channel (or channel/method)
                    published.append(json.loads(msg.value()))
            return published

        def recovered() -> bool:
            states = collapse(read())
            return all(key in states and states[key][-1]["level"] == "healthy" for key in KEYS)

        stages.wait_for(recovered, 300, f"{CHANNEL} to go down and recover on {topic}")
        stages.wait_for(lambda: _republished(read()), 30, "the periodic re-publication of the current state")
    finally:
        stages.stop_all()
        consumer.close()
    states = collapse(published)
    for key in KEYS:
        assert [s["level"] for s in states[key]] == STORY, (key, states[key])
    # the compacted topic: a router reading from the start gets every channel's latest state
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    [future] = admin.describe_configs([ConfigResource("topic", topic)]).values()
    assert future.result(timeout=30)["cleanup.policy"].value == "compact"
    # the same states as the embedded backend's GET /v1/channels, field for field
    embedded, server, store = _embedded_feed(tmp_path, events)
    server.stop()
    store.close()
    assert collapse(embedded) == states


def _republished(published: list[dict]) -> bool:
    """The last healthy state was published again by the periodic re-publication."""
    last = published[-1]
    return (
        sum(1 for s in published if (s["key"], s["level"], s["since"]) == (last["key"], last["level"], last["since"]))
        > 1
    )


def test_the_example_router_switches_away_and_back(tmp_path):
    events = channel_story(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    clock, pipeline, server, store = _serve(tmp_path, events)
    router = [sys.executable, str(ROOT / "examples" / "router.py"), "--url", server.url, "--once"]
    env = {"PAYWATCH_INGEST_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    routes: list[str] = []
    try:
        for second, batch in _per_second(iter(events)):
            clock.set(second)
            pipeline.ingest(batch)
            pipeline.tick(second)
            if second.second % 10 == 0:
                out = subprocess.run(
                    [*router, CHANNEL, "unionpay"], capture_output=True, text=True, env=env, timeout=30
                )
                assert out.returncode == 0, out.stderr
                route = out.stdout.strip()
                if not routes or routes[-1] != route:
                    routes.append(route)
    finally:
        server.stop()
        store.close()
    assert routes == [CHANNEL, "unionpay", CHANNEL]
