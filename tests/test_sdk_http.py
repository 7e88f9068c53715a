"""The SDK against the embedded backend's real HTTP ingest (`POST /v1/events`, NDJSON, bearer
token): delivery, a server outage, a wrong token, and per-line verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sdk import wait_for

from paywatch.app.config import Config
from paywatch.collectors.sdk import open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.transports import HttpTransport, Record
from paywatch.contract import Event
from paywatch.embedded.ingest import IngestServer
from paywatch.embedded.sqlite_store import SqliteStore

TOKEN = "s3cret-ingest-token"


class Ingest:
    """The embedded ingest server, restartable on the same port; keeps what it accepted."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = SqliteStore(tmp_path / "paywatch.sqlite")
        self.accepted: list[Event] = []
        self.port = 0
        self.server: IngestServer | None = None

    def start(self) -> None:
        self.server = IngestServer(self.accepted.extend, self.store, TOKEN, "127.0.0.1", self.port, 1 << 20)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.server.start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"

    def ids(self) -> list[str]:
        return [e.event.id for e in self.accepted if e.event.dataset == "paywatch.payment"]


@pytest.fixture
def ingest(tmp_path):
    server = Ingest(tmp_path)
    server.start()
    yield server
    server.stop()


def http_config(tmp_path: Path, url: str, token_env: str = "PAYWATCH_TEST_INGEST_TOKEN") -> Config:
    return Config(
        sdk=SdkSettings(
            transport="http",
            ingest_url=url,
            ingest_token_env=token_env,
            spill_dir=tmp_path / "spool",
            retry_interval_s=0.05,
            retry_max_interval_s=0.2,
        )
    )


def test_events_arrive_through_the_ingest_and_survive_its_restart(ingest, tmp_path, monkeypatch):
    monkeypatch.setenv("PAYWATCH_TEST_INGEST_TOKEN", TOKEN)
    log = open_logger("payment-gateway", config=http_config(tmp_path, ingest.url), heartbeat=False)
    for i in range(100):
        log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")
    assert log.flush(10)
    ingest.stop()
    for i in range(100, 300):
        log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")
    wait_for(lambda: log.stats()["spilled"] == 200)
    ingest.start()
    assert log.flush(20)
    log.close()
    assert ingest.ids() == [f"e{i}" for i in range(300)]
    stats = log.stats()
    assert (stats["sent"], stats["spilled"], stats["replayed"]) == (100, 200, 200)


def test_a_wrong_token_keeps_events_on_disk_until_a_restart_with_the_right_one(ingest, tmp_path, monkeypatch):
    monkeypatch.setenv("PAYWATCH_TEST_INGEST_TOKEN", "wrong")
    log = open_logger("payment-gateway", config=http_config(tmp_path, ingest.url), heartbeat=False)
    for i in range(20):
        log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")
    wait_for(lambda: log.stats()["spilled"] == 20)
    log.close(timeout=1)
    assert ingest.accepted == []

    monkeypatch.setenv("PAYWATCH_TEST_INGEST_TOKEN", TOKEN)
    fixed = open_logger("payment-gateway", config=http_config(tmp_path, ingest.url), heartbeat=False)
    assert fixed.flush(10)
    fixed.close()
    assert ingest.ids() == [f"e{i}" for i in range(20)]


def test_per_line_verdicts_map_to_the_records_of_the_batch(ingest):
    def record(event_id: str, action: str) -> Record:
        value = (
            b'{"@timestamp":"2026-11-22T03:00:00Z","event":{"id":"%s","dataset":"paywatch.payment",'
            b'"action":"%s"},"service":{"name":"svc","instance":{"id":"i1"}},"payment":{"order_id":"o1"}}'
        ) % (event_id.encode(), action.encode())
        return Record("payments.events", "o1", value)

    transport = HttpTransport(ingest.url, TOKEN, timeout_s=5)
    batch = [record("g1", "order_created"), record("g2", "teleported"), record("g3", "order_paid")]
    outcome = transport.send(batch, lambda _waited: True)
    transport.close()
    assert outcome.retry == []
    assert [i for i, _ in outcome.rejected] == [1] and "teleported" in outcome.rejected[0][1]
    assert [e.event.id for e in ingest.accepted] == ["g1", "g3"]
