"""`paywatch run --embedded` as a real process for tests: its config, its HTTP ingest, its signals."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from polling import wait_for

from paywatch.devstack import free_port


def app_lines(prefix: str, count: int, pad: int = 0) -> bytes:
    note = "x" * pad
    return b"".join(
        json.dumps(
            {
                "@timestamp": "2026-11-22T10:00:01.000Z",
                "event": {"id": f"{prefix}-{n}", "dataset": "paywatch.app"},
                "service": {"name": "checkout", "instance": {"id": "c-1"}},
                "log": {"level": "info"},
                "message": f"line {n} {note}",
            }
        ).encode()
        + b"\n"
        for n in range(count)
    )


def payment(action: str, order: str, attempt: str | None = None, channel: str | None = None, **kw: Any) -> dict:
    """One payment event of the contract, stamped now, as a service's SDK would send it."""
    outcome = kw.pop("outcome", None)
    event: dict[str, Any] = {"id": uuid.uuid4().hex, "dataset": "paywatch.payment", "action": action}
    if outcome:
        event["outcome"] = outcome
    body = {"order_id": order, "attempt_id": attempt, "channel": channel}
    return {
        "@timestamp": datetime.now(UTC).isoformat(),
        "event": event,
        "service": {"name": "payment-gateway", "instance": {"id": "gw-1"}},
        "payment": {**{k: v for k, v in body.items() if v}, **kw},
    }


def charged_but_pending(order: str, attempt: str, channel: str) -> list[dict]:
    """The defining incident: the channel says paid, the business never records it."""
    money = {"amount_minor": 8888, "currency": "CNY"}
    return [
        payment("order_created", order, **money),
        payment("payment_requested", order, attempt, channel, outcome="unknown", **money),
        payment("channel_callback", order, attempt, channel, outcome="success", status="TRADE_SUCCESS", **money),
    ]


class EmbeddedProcess:
    """One `paywatch run --embedded` process; `yaml` goes beside its `embedded:` section, whose
    settings `embedded` overrides. Restartable on the same database; `output` collects every run's."""

    def __init__(
        self,
        tmp_path: Path,
        yaml: str = "",
        env: dict[str, str] | None = None,
        listen_port: int = 0,
        **embedded: object,
    ) -> None:
        self.port = listen_port or free_port()
        self.database = tmp_path / "pw.sqlite"
        self.config = tmp_path / "paywatch.yaml"
        settings = {"database": str(self.database), "listen_port": self.port, "tick_interval_s": 0.2, **embedded}
        self.config.write_text(f"embedded: {json.dumps(settings)}\n{yaml}")
        self.token = "t0ken-" + uuid.uuid4().hex
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.env = {**os.environ, "PAYWATCH_INGEST_TOKEN": self.token, **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = b""

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch.app.cli", "run", "--embedded", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._up, 120, "the embedded ingest endpoint")
        return self.proc

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(self.proc.communicate()[0].decode()[-3000:])
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def post(self, events: list[dict]) -> float:
        """POST events; seconds it took (the ingest latency a service sees)."""
        started = time.monotonic()
        reply = httpx.post(
            f"{self.url}/v1/events",
            content="\n".join(json.dumps(e) for e in events).encode(),
            headers=self.auth,
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        return time.monotonic() - started

    def health(self, timeout_s: float = 10) -> tuple[int, dict]:
        reply = httpx.get(f"{self.url}/healthz", timeout=timeout_s)
        return reply.status_code, reply.json()

    def stop(self, timeout_s: float = 60) -> float:
        """SIGTERM (unless it is gone already); seconds until the process is gone."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.terminate()
        self.output += self.proc.communicate(timeout=timeout_s)[0]
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.output += self.proc.communicate(timeout=30)[0]

    def documents(self, dataset: str) -> list[dict]:
        """What the store holds (read as any SQLite reader would, beside the running process)."""
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT body FROM docs WHERE dataset = ? ORDER BY ts", (dataset,)).fetchall()
        finally:
            db.close()
        return [json.loads(r[0]) for r in rows]
