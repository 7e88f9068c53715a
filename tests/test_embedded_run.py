"""`paywatch run --embedded` as a real process, fed by the SDK over HTTP: one shop, one machine."""

import json
import os
import socket
import subprocess
import sys
import uuid

import httpx
from polling import wait_for

from paywatch.app.config import load_config
from paywatch.collectors.sdk import open_logger


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sdk_events_over_http_become_a_stuck_order_finding(tmp_path):
    port = free_port()
    db = tmp_path / "pw.sqlite"
    cfg = tmp_path / "paywatch.yaml"
    cfg.write_text(
        f"""
embedded: {{database: {db}, listen_port: {port}, tick_interval_s: 0.2}}
alerts: {{alertmanager: {{urls: []}}}}
detectors: {{default: {{paid_grace_s: 1}}}}
sdk: {{transport: http, ingest_url: "http://127.0.0.1:{port}/v1/events"}}
"""
    )
    env = {**os.environ, "PAYWATCH_INGEST_TOKEN": "t0ken-" + uuid.uuid4().hex}
    proc = subprocess.Popen(
        [sys.executable, "-m", "paywatch.app.cli", "run", "--embedded", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _healthy(port), 120, "the ingest endpoint")
        os.environ["PAYWATCH_INGEST_TOKEN"] = env["PAYWATCH_INGEST_TOKEN"]
        log = open_logger("payment-gateway", config=load_config(cfg), heartbeat=False)
        log.payment("order_created", order_id="ord-1", amount_minor=4200, currency="CNY")
        log.payment(
            "payment_requested",
            order_id="ord-1",
            attempt_id="att-1",
            channel="alipay",
            amount_minor=4200,
            currency="CNY",
            outcome="unknown",
        )
        log.payment(
            "channel_callback",
            order_id="ord-1",
            attempt_id="att-1",
            channel="alipay",
            outcome="success",
            status="TRADE_SUCCESS",
            note="card 4111 1111 1111 1111",
        )
        log.close()
        shown = wait_for(lambda: _finding(cfg, "ord-1"), 120, "a paid_but_pending finding for ord-1")
        assert shown["payment"]["order_id"] == "ord-1"
    finally:
        os.environ.pop("PAYWATCH_INGEST_TOKEN", None)
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]
    text = db.read_bytes() + out
    assert b"4111111111111111" not in text and b"4111 1111 1111 1111" not in text


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _finding(cfg, order_id: str):
    out = subprocess.run(
        [sys.executable, "-m", "paywatch.app.cli", "orders", "show", order_id, "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        doc = json.loads(line)
        if doc.get("finding", {}).get("kind") == "paid_but_pending":
            return doc
    return None
