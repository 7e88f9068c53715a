"""`paywatch simulate` delivering to the real embedded HTTP ingest and to real Kafka."""

from __future__ import annotations

import time
import uuid

import pytest
import yaml
from click.testing import CliRunner

from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.simulate import simulate as simulate_command
from paywatch.contract import decode, encode
from paywatch.kafka import consumer_config
from paywatch.settings import KafkaSettings
from paywatch.simulator import simulate

ARGS = ["-s", "duplicate_burst:start=30s,duration=30s", "--duration", "90s", "--seed", "8", "--telemetry", "direct"]


def expected() -> list[bytes]:
    return [encode(e) for e in simulate(["duplicate_burst:start=30s,duration=30s"], seed=8, duration=90)]


@pytest.fixture
def ingest(tmp_path, monkeypatch):
    received: list = []
    store = SqliteStore(tmp_path / "ingest.sqlite")
    server = IngestServer(received.extend, store, "s3cret-token", "127.0.0.1", 0, 16 * 1024 * 1024)
    server.start()
    yield server, received
    server.stop()
    store.close()


def test_events_reach_the_embedded_ingest_in_order(ingest, monkeypatch):
    server, received = ingest
    monkeypatch.setenv("PAYWATCH_INGEST_TOKEN", "s3cret-token")
    result = CliRunner().invoke(simulate_command, [*ARGS, "--ingest", f"{server.url}/v1/events"])
    assert result.exit_code == 0, result.output
    assert [encode(e) for e in received] == expected()


def test_a_wrong_ingest_token_fails_clearly_instead_of_hanging(ingest, monkeypatch):
    server, received = ingest
    monkeypatch.setenv("PAYWATCH_INGEST_TOKEN", "wrong")
    result = CliRunner().invoke(
        simulate_command, [*ARGS, "--ingest", f"{server.url}/v1/events", "--give-up-after", "1"]
    )
    assert result.exit_code == 1
    assert "still unavailable" in result.output and "401" in result.output
    assert received == []


def test_events_reach_kafka_keyed_by_order_and_service(kafka_bootstrap, tmp_path):
    prefix = f"simtest-{uuid.uuid4().hex[:8]}"
    topics = {"payments": f"{prefix}.payments", "heartbeats": f"{prefix}.heartbeats", "logs": f"{prefix}.logs"}
    config = tmp_path / "paywatch.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_bootstrap, "topics": topics}}))
    result = CliRunner().invoke(simulate_command, [*ARGS, "--kafka", "--config", str(config)])
    assert result.exit_code == 0, result.output

    from confluent_kafka import Consumer

    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    consumer = Consumer(consumer_config(settings, f"{prefix}-reader"))
    consumer.subscribe([topics["payments"], topics["heartbeats"]])
    want = expected()
    got: dict[str, list] = {topics["payments"]: [], topics["heartbeats"]: []}
    deadline = time.monotonic() + 60
    while sum(map(len, got.values())) < len(want) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        got[msg.topic()].append((msg.key().decode(), msg.value()))
    consumer.close()
    assert sorted(v for msgs in got.values() for _, v in msgs) == sorted(want)
    for key, value in got[topics["payments"]]:
        assert key == decode(value).payment.order_id
    for key, value in got[topics["heartbeats"]]:
        assert key == decode(value).service.name
