"""HTTP ingest for the embedded backend: `POST /v1/events`, NDJSON in the event contract.

The same contract as the Kafka topics, so a service moves between backends by changing
only where its SDK points. Each line is judged on its own: valid events go on, invalid
ones are dead-lettered with the line number and reason, and the response says which.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from paywatch.contract import ContractError, Event, decode
from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.pan import DEFAULT, PanSettings, mask_bytes, mask_event, mask_text

EventSink = Callable[[list[Event]], None]


def judge_lines(body: bytes, pan: PanSettings = DEFAULT) -> tuple[list[Event], list[tuple[int, str, bytes]]]:
    """Split an NDJSON body into valid, PAN-masked events and (line number, reason, raw line) rejects;
    an event the card-number policy rejects is one of the rejects."""
    accepted: list[Event] = []
    rejected: list[tuple[int, str, bytes]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            accepted.append(mask_event(decode(line), pan))
        except ContractError as exc:
            rejected.append((number, str(exc), line))
    return accepted, rejected


class IngestServer:
    """A threaded HTTP server in front of an event sink; `start()` runs it in the background."""

    def __init__(
        self,
        sink: EventSink,
        store: SqliteStore,
        token: str,
        host: str,
        port: int,
        max_body_bytes: int,
        pan: PanSettings = DEFAULT,
    ) -> None:
        if not token:
            raise ValueError("the ingest endpoint needs a bearer token (set it in the environment or a file)")
        self._sink = sink
        self._store = store
        self._token = token.encode()
        self._max_body = max_body_bytes
        self._pan = pan
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="paywatch-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token)

    def handle(self, path: str, auth: str | None, body: bytes | None, length: int) -> tuple[int, dict[str, Any]]:
        if path != "/v1/events":
            return 404, {"error": f"no such endpoint {path}; events go to POST /v1/events"}
        if not self._authorised(auth):
            return 401, {"error": "missing or wrong bearer token"}
        if length > self._max_body:
            return 413, {"error": f"body of {length} bytes is over the {self._max_body}-byte limit"}
        accepted, rejected = judge_lines(body or b"", self._pan)
        for number, reason, raw in rejected:
            masked = mask_bytes(raw, self._pan)
            self._store.dead_letter("http:/v1/events", f"line {number}: {mask_text(reason)}", masked)
        if accepted:
            self._sink(accepted)
        reply = {
            "accepted": len(accepted),
            "rejected": [{"line": n, "reason": mask_text(r)} for n, r, _ in rejected],
        }
        return (422 if rejected else 200), reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= server._max_body else None
                status, reply = server.handle(self.path, self.headers.get("Authorization"), body, length)
                self._reply(status, reply)

            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": "not found"})

            def _reply(self, status: int, reply: dict[str, Any]) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: paywatch logs its own way
                pass

        return Handler
