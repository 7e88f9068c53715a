"""HTTP ingest for the embedded backend: `POST /v1/events`, NDJSON in the event contract (or ECS
log lines); `POST /v1/logs`, OpenTelemetry logs over OTLP/HTTP (`paywatch/otlp.py`);
authenticated reads on GET (`paywatch/embedded/queries.py`).

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

from paywatch.contract import ContractError, Event
from paywatch.embedded.queries import Queries
from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.intake import Intake, judge_lines
from paywatch.otlp import export_logs
from paywatch.pan import DEFAULT, PanSettings, mask_bytes, mask_event, mask_text

EventSink = Callable[[list[Event]], None]
JSON = "application/json"


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
        intake: Intake | None = None,
        queries: Queries | None = None,
        pan: PanSettings = DEFAULT,
    ) -> None:
        if not token:
            raise ValueError("the ingest endpoint needs a bearer token (set it in the environment or a file)")
        self._sink = sink
        self._intake = intake or Intake()
        self._queries = queries
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
            return 404, {"error": f"no such endpoint {path}; events go to POST /v1/events, OTLP logs to /v1/logs"}
        if not self._authorised(auth):
            return 401, {"error": "missing or wrong bearer token"}
        if length > self._max_body:
            return 413, {"error": f"body of {length} bytes is over the {self._max_body}-byte limit"}
        accepted, rejected = judge_lines(body or b"", self._intake, self._pan)
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

    def handle_logs(
        self, auth: str | None, body: bytes | None, length: int, content_type: str, encoding: str | None
    ) -> tuple[int, dict[str, Any] | bytes, str]:
        """OTLP/HTTP logs: the records that break the contract are dead-lettered and counted in the
        response's partial_success, as the OTLP specification asks; the others go on."""
        if not self._authorised(auth):
            return 401, {"error": "missing or wrong bearer token"}, JSON
        if length > self._max_body:
            return 413, {"error": f"body of {length} bytes is over the {self._max_body}-byte limit"}, JSON
        try:
            export = export_logs(body or b"", content_type, encoding, self._intake)
        except ContractError as exc:
            return 400, {"error": mask_text(str(exc))}, JSON
        for number, reason, raw in export.rejected:
            self._store.dead_letter("http:/v1/logs", f"record {number}: {mask_text(reason)}", mask_bytes(raw))
        if export.events:
            self._sink([mask_event(e) for e in export.events])
        return 200, export.reply, export.reply_type

    def handle_get(self, path: str, auth: str | None) -> tuple[int, dict[str, Any]]:
        if path == "/healthz":
            return 200, {"status": "ok"}
        if not self._authorised(auth):
            return 401, {"error": "missing or wrong bearer token"}
        if self._queries is None:
            return 404, {"error": "not found"}
        return self._queries.get(path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= server._max_body else None
                auth = self.headers.get("Authorization")
                if self.path == "/v1/logs":
                    content_type = self.headers.get("Content-Type") or JSON
                    self._reply(
                        *server.handle_logs(auth, body, length, content_type, self.headers.get("Content-Encoding"))
                    )
                    return
                status, reply = server.handle(self.path, auth, body, length)
                self._reply(status, reply)

            def do_GET(self) -> None:
                self._reply(*server.handle_get(self.path, self.headers.get("Authorization")))

            def _reply(self, status: int, reply: dict[str, Any] | bytes, content_type: str = JSON) -> None:
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: paywatch logs its own way
                pass

        return Handler
