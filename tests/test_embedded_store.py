"""The embedded backend's SQLite store and HTTP ingest endpoint."""

import json
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

from paywatch import contract
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import ManualClock
from paywatch.finding import FindingPayment, encode_finding, make_finding

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def payment_line(event_id: str, order_id: str = "o1", **payment) -> bytes:
    doc = {
        "@timestamp": "2026-11-22T10:00:01.000Z",
        "event": {"id": event_id, "dataset": "paywatch.payment", "action": "channel_callback", "outcome": "success"},
        "service": {"name": "callback-receiver", "instance": {"id": "cb-1"}},
        "payment": {"order_id": order_id, "attempt_id": "a1", "channel": "alipay", **payment},
    }
    return json.dumps(doc).encode()


def finding_doc(state: str, at: datetime, level=None, kind="paid_but_pending_incident"):
    f = make_finding(
        at=at,
        kind=kind,
        state=state,
        fingerprint=f"{kind}:alipay",
        severity="critical",
        summary=state,
        level=level,
        payment=FindingPayment(channel="alipay"),
    )
    return json.loads(encode_finding(f))


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "pw.sqlite", clock=ManualClock(T0))
    yield s
    s.close()


def test_documents_are_stored_once_by_event_id_with_processing_time_apart(store):
    doc = msgspec.to_builtins(contract.decode(payment_line("e1")))
    assert store.write([doc, doc]) == 1
    assert store.write([doc]) == 0
    [stored] = store.order_timeline("o1")
    assert stored["@timestamp"] == "2026-11-22T10:00:01Z"
    assert stored["event"]["ingested"] == "2026-11-22T10:00:00.000Z"


def test_incidents_fold_open_and_resolve_per_fingerprint(store):
    store.write([finding_doc("open", T0), finding_doc("resolved", T0.replace(minute=5))])
    store.write([finding_doc("open", T0, level="degraded", kind="channel_health")])
    rows = {r["kind"]: r for r in store.incidents()}
    assert rows["paid_but_pending_incident"]["resolved_at"] == "2026-11-22T10:05:00Z"
    assert rows["channel_health"]["resolved_at"] is None


@pytest.fixture
def ingest(store):
    received = []
    server = IngestServer(received.extend, store, token="s3cret", host="127.0.0.1", port=0, max_body_bytes=4096)
    server.start()
    yield server, received
    server.stop()


def test_ingest_accepts_valid_lines_and_dead_letters_the_rest(ingest, store):
    server, received = ingest
    body = payment_line("e1") + b"\n{broken\n" + payment_line("e2", payment_note="x").replace(b"alipay", b"x")
    r = httpx.post(f"{server.url}/v1/events", content=body, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 422
    reply = r.json()
    assert reply["accepted"] == 1
    assert [x["line"] for x in reply["rejected"]] == [2, 3]
    assert "not valid JSON" in reply["rejected"][0]["reason"]
    assert [e.event.id for e in received] == ["e1"]
    letters = store.dead_letters()
    assert {letter["raw"] for letter in letters} == {b"{broken", body.split(b"\n")[2]}


def test_ingest_masks_card_numbers_before_anything_else_sees_them(ingest):
    server, received = ingest
    line = payment_line("e1", status="declined card 4111111111111111")
    r = httpx.post(f"{server.url}/v1/events", content=line, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    assert received[0].payment.status == "declined card 411111******1111"


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b"{}", 401),
        ({"Authorization": "Bearer wrong"}, b"{}", 401),
        ({"Authorization": "Bearer s3cret"}, b"x" * 5000, 413),
    ],
)
def test_ingest_refuses_clearly(ingest, headers, body, status):
    server, received = ingest
    r = httpx.post(f"{server.url}/v1/events", content=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]
    assert received == []


def test_operator_commands_read_the_embedded_database(tmp_path, store):
    from click.testing import CliRunner

    from paywatch.app.cli import main

    store.write([msgspec.to_builtins(contract.decode(payment_line("e1", order_id="o-42", amount_minor=990)))])
    store.write([finding_doc("open", T0)])
    cfg = tmp_path / "paywatch.yaml"
    cfg.write_text(f"embedded:\n  database: {store.path}\n")
    runner = CliRunner()
    shown = runner.invoke(main, ["orders", "show", "o-42", "--config", str(cfg), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["payment"]["amount_minor"] == 990
    missing = runner.invoke(main, ["orders", "show", "nope", "--config", str(cfg)])
    assert missing.exit_code != 0 and "no events stored for order nope" in missing.output
    listed = runner.invoke(main, ["incidents", "--config", str(cfg), "--json"])
    assert json.loads(listed.output)["kind"] == "paid_but_pending_incident"
    bad = tmp_path / "bad.yaml"
    bad.write_text("embeded: {}\n")
    typo = runner.invoke(main, ["incidents", "--config", str(bad)])
    assert typo.exit_code != 0 and "embeded" in typo.output


def test_dead_letters_never_keep_a_card_number(ingest, store):
    server, _ = ingest
    r = httpx.post(
        f"{server.url}/v1/events", content=b"{broken 4111111111111111", headers={"Authorization": "Bearer s3cret"}
    )
    assert r.status_code == 422
    assert store.dead_letters()[0]["raw"] == b"{broken 411111******1111"
