"""What the alerts tests share: a real local HTTP server that records what it receives (the
webhook receiver Alertmanager delivers to, and a flaky endpoint for the retry tests), the
Alertmanager config that routes to it, and stuck-order findings."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from polling import wait_for

from paywatch.alerts.rules import Rules, load_rules
from paywatch.finding import Evidence, Finding, FindingPayment, make_finding


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    def __init__(self, fail_first: int = 0, fail_status: int = 503, retry_after: str | None = None) -> None:
        self.received: list[Received] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= failing
                self.send_response(fail_status if failing else 200)
                if failing and retry_after:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        def probe() -> list[Received] | None:
            with self.lock:
                snapshot = list(self.received)
            return snapshot if predicate(snapshot) else None

        try:
            return wait_for(probe, timeout, "the expected posts", every=0.1)
        except AssertionError:
            with self.lock:
                got = [r.body[:300] for r in self.received]
            raise AssertionError(
                f"receiver did not get what was expected in {timeout}s; got {len(got)}: {got}"
            ) from None


def posts(received: list[Received], path: str = "/pager") -> list[dict]:
    """Notifications Alertmanager delivered to one receiver path, as JSON."""
    return [r.json() for r in received if r.path == path]


def am_config(receiver_url: str) -> str:
    """Pages to /pager grouped per alert and channel, the watchdog to /deadman; test-short timings."""
    return f"""\
route:
  receiver: pager
  group_by: [alertname, channel]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: deadman
      matchers: ['alertname="PaywatchWatchdog"']
receivers:
  - name: pager
    webhook_configs: [{{url: "{receiver_url}/pager", send_resolved: true}}]
  - name: deadman
    webhook_configs: [{{url: "{receiver_url}/deadman"}}]
"""


def stuck(order: str, at: datetime, state: str = "open", channel: str = "alipay") -> Finding:
    """The detectors' per-order paid-but-pending finding."""
    return make_finding(
        at=at,
        kind="paid_but_pending",
        state=state,
        fingerprint=f"paid_but_pending|{order}",
        severity="warning",
        summary=f"order {order} paid at {channel} but pending",
        payment=FindingPayment(order_id=order, channel=channel),
        evidence=Evidence(event_ids=[f"ev-{order}"]),
    )


def rules(page_at: int = 3) -> Rules:
    """The shipped rules with stuck orders paging at `page_at`: tests state the threshold they
    rely on instead of inheriting whatever the shipped default is."""
    return Rules(
        rules=[
            r.model_copy(update={"page_at": page_at}) if r.kind == "paid_but_pending" else r for r in load_rules().rules
        ]
    )
