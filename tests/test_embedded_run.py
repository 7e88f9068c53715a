"""`paywatch run --embedded` as a real process, fed by the SDK over HTTP: one shop, one machine."""

import json
import os
import subprocess
import sys

from embedded_process import EmbeddedProcess
from polling import wait_for

from paywatch.app.config import load_config
from paywatch.collectors.sdk import open_logger
from paywatch.devstack import free_port


def test_sdk_events_over_http_become_a_stuck_order_finding(tmp_path):
    port = free_port()
    proc = EmbeddedProcess(
        tmp_path,
        f"""
alerts: {{alertmanager: {{urls: []}}}}
detectors: {{default: {{paid_grace_s: 1}}}}
sdk: {{transport: http, ingest_url: "http://127.0.0.1:{port}/v1/events"}}
""",
        listen_port=port,
    )
    cfg = proc.config
    try:
        proc.start()
        os.environ["PAYWATCH_INGEST_TOKEN"] = proc.token
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
        proc.stop(timeout_s=30)
    assert proc.proc is not None and proc.proc.returncode == 0, proc.output.decode()[-2000:]
    text = proc.database.read_bytes() + proc.output
    assert b"4111111111111111" not in text and b"4111 1111 1111 1111" not in text


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
