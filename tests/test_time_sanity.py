"""A producer's `@timestamp` is a claim: events far from paywatch's clock are stored, judged at
arrival and flagged, and can neither hide a death nor open a storm. Over real HTTP into the
embedded pipeline, on a clock the test moves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from live_pipeline import TOKEN, Live, running

from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.simulate import simulate as simulate_command

CONTRACT = Path(__file__).resolve().parents[1] / "docs" / "contract.md"


@pytest.fixture
def live(tmp_path) -> Iterator[Live]:
    with running(tmp_path) as env:
        yield env


def beat(at: datetime | str, seq: int, service: str = "compensation-job") -> bytes:
    stamp = at if isinstance(at, str) else at.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "@timestamp": stamp,
            "event": {"id": f"{service}-{seq}", "dataset": "paywatch.heartbeat"},
            "service": {"name": service, "instance": {"id": "comp-1"}},
            "heartbeat": {"interval_s": 10, "seq": seq, "status": "up"},
        }
    ).encode()


@pytest.mark.parametrize("future_first", [False, True], ids=["after-real-beats", "first-beat"])
def test_a_heartbeat_dated_2099_does_not_hide_a_later_death(live, future_first):
    if not future_first:
        for seq in (1, 2):
            assert live.post(beat(live.clock.now(), seq)).status_code == 200
            live.run(10)
    assert live.post(beat("2099-01-01T00:00:00Z", 3)).status_code == 200
    assert live.store.count("paywatch.heartbeat") == (1 if future_first else 3)  # stored, as sent
    [skew] = live.opened("clock_skew")  # and flagged at once
    assert "ahead of paywatch's clock" in skew.finding.summary
    died = live.clock.now()
    live.run(60)  # no beat since the one dated 2099
    [down] = live.opened("service_down")
    assert down.timestamp - died <= timedelta(seconds=31)  # interval 10 s × grace 3, judged at arrival


def test_the_contracts_example_heartbeat_does_not_page_at_once(live):
    [example] = [
        line.encode()
        for line in re.findall(r"^\{.*\}$", CONTRACT.read_text(), re.M)
        if '"dataset": "paywatch.heartbeat"' in line and '"heartbeat"' in line  # not the broken example
    ]
    assert live.post(example).status_code == 200
    live.run(25)  # inside interval × grace of its arrival: alive, whatever its 2026-11-22 stamp says
    assert live.opened("service_down") == [] and live.opened("heartbeat_missing") == []
    assert [f.service.name for f in live.opened("clock_skew")] == ["compensation-job"]
    live.run(10)  # and then silent past 30 s: now it is down
    assert [f.service.name for f in live.opened("service_down")] == ["compensation-job"]


def test_simulate_to_a_live_ingest_at_real_speed_stamps_the_present(tmp_path, monkeypatch):
    received: list = []
    store = SqliteStore(tmp_path / "ingest.sqlite")
    server = IngestServer(received.extend, store, TOKEN, "127.0.0.1", 0, 1 << 20)
    server.start()
    monkeypatch.setenv("PAYWATCH_INGEST_TOKEN", TOKEN)
    try:
        before = datetime.now(UTC) - timedelta(seconds=1)
        result = CliRunner().invoke(
            simulate_command,
            ["--duration", "3s", "--speed", "1", "--telemetry", "direct", "--ingest", f"{server.url}/v1/events"],
        )
        after = datetime.now(UTC)
    finally:
        server.stop()
        store.close()
    assert result.exit_code == 0, result.output
    assert received and all(before <= e.timestamp <= after for e in received), (before, after, received[0].timestamp)
