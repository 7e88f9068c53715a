"""The SDK against the embedded backend's real HTTP ingest (`POST /v1/events`, NDJSON, bearer
token): delivery, a server outage, a wrong token, and per-line verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sdk import wait_for

from paywatch.app.config import Config
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.collectors.sdk import open_logger
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.transports import HttpTransport, Record
from paywatch.contract import Event

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


# ---------------------------------------------------------------- body limits and back-pressure


def payment_records(n: int) -> list[Record]:
    value = (
        b'{"@timestamp":"2026-11-22T03:00:00Z","event":{"id":"big-%d","dataset":"paywatch.payment",'
        b'"action":"order_created"},"service":{"name":"svc","instance":{"id":"i1"}},"payment":{"order_id":"o%d"}}'
    )
    return [Record("payments.events", f"o{i}", value % (i, i)) for i in range(n)]


def test_a_batch_over_the_ingest_body_limit_is_split_and_arrives_whole(tmp_path):
    """The real ingest with a 64 KiB body limit; 2,000 events are about 370 KB."""
    server = Ingest(tmp_path)
    server.server = IngestServer(server.accepted.extend, server.store, TOKEN, "127.0.0.1", 0, 64 * 1024)
    server.port = int(server.server.url.rsplit(":", 1)[1])
    server.server.start()
    try:
        transport = HttpTransport(server.url, TOKEN, timeout_s=5)
        records = payment_records(2000)
        assert sum(len(r.value) + 1 for r in records) > 5 * 64 * 1024
        outcome = transport.send(records, lambda _waited: True)
        assert (outcome.retry, outcome.rejected) == ([], [])
        assert [e.event.id for e in server.accepted] == [f"big-{i}" for i in range(2000)]
        again = transport.send(payment_records(2000), lambda _waited: True)  # now cut to size up front
        transport.close()
        assert (again.retry, again.rejected) == ([], []) and len(server.accepted) == 4000
    finally:
        server.stop()


def test_the_sdk_replays_a_spilled_batch_over_the_body_limit_without_losing_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PAYWATCH_TEST_INGEST_TOKEN", TOKEN)
    server = Ingest(tmp_path)
    server.server = IngestServer(server.accepted.extend, server.store, TOKEN, "127.0.0.1", 0, 64 * 1024)
    server.port = int(server.server.url.rsplit(":", 1)[1])
    url = server.url
    log = open_logger("payment-gateway", config=http_config(tmp_path, url), heartbeat=False)
    for i in range(2000):  # nobody listens yet: all 2,000 go to the spill file
        log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")
    wait_for(lambda: log.stats()["spilled"] == 2000)
    server.server.start()  # the replay sends them as one 2,000-event batch, refused as too large
    try:
        assert log.flush(30)
        log.close()
    finally:
        server.stop()
    assert server.ids() == [f"e{i}" for i in range(2000)]
    stats = log.stats()
    assert (stats["replayed"], stats["dropped"]) == (2000, 0)


class Crowded:
    """A real HTTP ingest stand-in that answers the first `busy` requests `status` with a
    Retry-After, then accepts; it notes when each request came."""

    def __init__(self, status: int, retry_after: str, busy: int = 1) -> None:
        import http.server
        import threading
        import time

        self.times: list[float] = []
        self.lines: list[bytes] = []
        crowded = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                crowded.times.append(time.monotonic())
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if len(crowded.times) <= busy:
                    self.send_response(status)
                    self.send_header("Retry-After", retry_after)
                    reply = b'{"error": "queue full"}'
                else:
                    crowded.lines += body.splitlines()
                    self.send_response(200)
                    reply = b'{"accepted": %d, "rejected": []}' % len(body.splitlines())
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/events"


@pytest.mark.parametrize(("status", "retry_after", "at_least_s"), [(429, "1", 1.0), (503, "2", 2.0)])
def test_retry_after_is_honoured_and_the_caller_never_waits(tmp_path, monkeypatch, status, retry_after, at_least_s):
    import time

    monkeypatch.setenv("PAYWATCH_TEST_INGEST_TOKEN", TOKEN)
    server = Crowded(status, retry_after)
    log = open_logger("payment-gateway", config=http_config(tmp_path, server.url), heartbeat=False)
    slowest = 0.0
    try:
        for i in range(500):
            started = time.perf_counter()
            log.payment("order_created", order_id=f"o{i}", event_id=f"e{i}")  # must not raise
            slowest = max(slowest, time.perf_counter() - started)
            if i == 0:
                wait_for(lambda: len(server.times) == 1)  # the first batch meets the crowded server
        assert log.flush(20)
        log.close()
    finally:
        server.httpd.shutdown()
    # the backoff alone would have tried again after 0.05 s (http_config's retry_interval_s)
    assert server.times[1] - server.times[0] >= at_least_s
    ids = [line.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode() for line in server.lines]
    assert sorted(ids, key=lambda e: int(e[1:])) == [f"e{i}" for i in range(500)] and len(set(ids)) == 500
    assert slowest < 0.1  # generous: the caller never waits for the transport
    assert log.stats()["dropped"] == 0


def test_retry_after_as_an_http_date():
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from paywatch.retry_after import retry_after_seconds

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (retry_after_seconds(later) or 0) <= 30
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
