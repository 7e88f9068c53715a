"""No card number of the corpus survives anywhere the embedded backend writes or sends, and
Luhn-valid order ids come through whole, so on-call can follow a page to `paywatch orders show`.

Raw NDJSON goes over real HTTP to the ingest endpoint (as a non-SDK producer would send it:
the SDK's own masking must not be what protects storage), with corpus card numbers in every
string field and label, in id fields, and in broken lines. Six stuck orders with Luhn-valid
numeric ids page through every sink to local receivers on loopback. Then the raw bytes of
the SQLite file and its WAL, the dead letters, paywatch's own log, every page (Alertmanager,
webhook, Slack, PagerDuty), the Kibana links and the HTML report are searched for the corpus.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
import structlog
from alerts_support import Receiver
from pan_corpus import (
    INTACT_TEXT,
    NOW,
    ORDER_IDS,
    PANS,
    broken_lines,
    corpus_lines,
    id_field_lines,
    stuck_order_lines,
    survivors,
)

from paywatch.app.config import Config
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.report import ReportInput, render
from paywatch.logs import configure_logging

TOKEN = "t0ken-pan-everywhere"


@pytest.fixture
def captured_log():
    out = io.StringIO()
    configure_logging(level="info", json=True, stream=out)
    yield out
    structlog.reset_defaults()
    configure_logging(level="warning", json=True, stream=sys.stderr)


def test_no_card_number_survives_anywhere_and_paged_orders_can_be_looked_up(tmp_path: Path, captured_log):
    db = tmp_path / "pw.sqlite"
    secrets = {name: tmp_path / name for name in ("hook", "slack", "pd")}
    with Receiver() as am, Receiver() as hook, Receiver() as slack, Receiver() as pd:
        secrets["hook"].write_text("hook-secret")
        secrets["slack"].write_text(f"{slack.url}/services/T0/B0/x")
        secrets["pd"].write_text("R0UTINGKEY")
        settings = {
            "embedded": {"database": str(db)},
            "detectors": {"default": {"paid_grace_s": 1}},
            "kibana": {"url": "http://kibana.example:5601"},
            "alerts": {
                "alertmanager": {"urls": [am.url]},
                "webhook": {"url": f"{hook.url}/hook", "secret_file": str(secrets["hook"]), "secret_env": "NO_SUCH"},
                "slack": {"webhook_url_file": str(secrets["slack"]), "webhook_url_env": "NO_SUCH"},
                "pagerduty": {"routing_key_file": str(secrets["pd"]), "routing_key_env": "NO_SUCH", "url": pd.url},
                "self_monitor": {"watchdog": False},
            },
        }
        config = Config.model_validate(settings)
        store = SqliteStore(db)
        pipeline = Pipeline(config, store, started_at=NOW)
        server = IngestServer(pipeline.ingest, store, TOKEN, "127.0.0.1", 0, 1 << 24, pan=config.pan)
        server.start()
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                good = corpus_lines() + stuck_order_lines()
                reply = http.post("/v1/events", content=b"\n".join(good))
                assert reply.status_code == 200, reply.text[:2000]
                assert reply.json()["accepted"] == len(good)
                reply = http.post("/v1/events", content=b"\n".join(id_field_lines()))
                assert reply.status_code == 422 and reply.json()["accepted"] == 0
                reasons = [r["reason"] for r in reply.json()["rejected"]]
                assert len(reasons) == len(PANS) and all("card number" in r for r in reasons), reasons
                assert {r.split(" is ")[0] for r in reasons} == {
                    "payment.order_id",
                    "payment.attempt_id",
                    "payment.merchant_id",
                    "labels.refund_id",
                }
                bad = broken_lines()
                reply = http.post("/v1/events", content=b"\n".join(bad))
                assert reply.status_code == 422 and len(reply.json()["rejected"]) == len(bad)
                replies = reply.text
            for second in range(2, 8):
                pipeline.tick(NOW + timedelta(seconds=second))
            pages = slack.wait_for(lambda got: any("PaidButPending" in r.body.decode() for r in got), 30)
            for receiver in (am, hook, pd):
                receiver.wait_for(lambda got: bool(got), 30)
            # Everything paywatch wrote: the database and its WAL, byte for byte, while still open.
            raw_files = {p.name: p.read_bytes() for p in tmp_path.glob("pw.sqlite*")}
            assert {"pw.sqlite", "pw.sqlite-wal"} <= set(raw_files)
            report = render(ReportInput("PAN report", store), tmp_path / "report.html").read_text()
            dead = store.dead_letters(limit=1000)
            timeline = store.order_timeline(ORDER_IDS[0])
        finally:
            server.stop()
            store.close()

    # ---- nothing survives
    sent = {
        "alertmanager": [r.body for r in am.received],
        "webhook": [r.body for r in hook.received],
        "slack": [r.body for r in slack.received],
        "pagerduty": [r.body for r in pd.received],
    }
    places = {
        **raw_files,
        **{name: b"\n".join(bodies) for name, bodies in sent.items()},
        "dead letters": b"\n".join(d["raw"] + d["reason"].encode() for d in dead),
        "ingest replies": replies,
        "paywatch log": captured_log.getvalue(),
        "report": report,
    }
    assert len(dead) == len(PANS) * 4
    assert {name: survivors(data) for name, data in places.items()} == {name: [] for name in places}
    assert "PaidButPending" in captured_log.getvalue()  # the log sink wrote the page too

    # ---- ids come through whole: the page names the orders, the link finds them, the CLI shows them
    # The page fires when the fifth order is stuck (page_at: 5), so it names five or six of them.
    webhook_alert = next(a for r in hook.received for a in r.json()["alerts"] if a["alert"]["status"] == "firing")
    paged = webhook_alert["payment"]["order_id"]
    assert len(paged) >= 5 and set(paged) <= set(ORDER_IDS[:6])
    kibana = unquote(webhook_alert["alert"]["annotations"]["kibana_url"])
    assert all(f'"{order}"' in kibana for order in paged), kibana
    text = next(r.json() for r in pages if "PaidButPending" in r.body.decode())["blocks"][1]["text"]["text"]
    named = re.search(r"Orders: ([0-9, ]+)", text).group(1).split(", ")
    assert sorted(named) == sorted(paged)
    am_alert = next(a for r in am.received for a in r.json() if a["labels"]["alertname"] == "PaidButPending")
    assert all(order in am_alert["annotations"]["description"] for order in paged)
    assert all(f'"{order}"' in unquote(am_alert["generatorURL"]) for order in paged)
    pd_event = next(r.json() for r in pd.received if r.json().get("event_action") == "trigger")
    assert all(order in pd_event["payload"]["custom_details"]["description"] for order in paged)

    cfg = tmp_path / "paywatch.yaml"
    cfg.write_text(f"embedded: {{database: {db}}}\n")
    shown = subprocess.run(
        [sys.executable, "-m", "paywatch.app.cli", "orders", "show", named[0], "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    docs = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {d["event"]["dataset"] for d in docs} >= {"paywatch.payment", "paywatch.finding", "paywatch.alert"}
    callback = next(d for d in docs if d["event"].get("action") == "channel_callback")
    assert callback["message"].startswith(f"callback for {named[0]}: card ")  # the order id kept in text
    assert callback["labels"]["refund_no"] == ORDER_IDS[6] and callback["labels"]["phone"] == INTACT_TEXT[-4]
    assert survivors(shown.stdout) == []
    created = next(d for d in timeline if d["event"].get("action") == "order_created")
    assert created["message"] == f"order {ORDER_IDS[0]} created {INTACT_TEXT[0]}"


def test_the_report_masks_what_it_shows_even_if_storage_held_a_card_number(tmp_path: Path):
    """Defence in depth: a document written around the ingest (another stage, an old database)."""
    store = SqliteStore(tmp_path / "old.sqlite")
    alert = {
        "@timestamp": "2026-11-26T10:00:00.000Z",
        "event": {"id": "al-1", "dataset": "paywatch.alert"},
        "alert": {
            "status": "firing",
            "fingerprint": "f1",
            "labels": {"alertname": "PaidButPending"},
            "annotations": {"summary": f"order paid with {PANS[1]} ({PANS[2][:4]} {PANS[2][4:]})"},
        },
    }
    try:
        store.write([alert])
        html = render(ReportInput("old", store, notes={"seen": PANS[3]}), tmp_path / "r.html").read_text()
    finally:
        store.close()
    assert "PaidButPending" in html and "order paid with" in html
    assert survivors(html) == []
