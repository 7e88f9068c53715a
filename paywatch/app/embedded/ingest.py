"""HTTP ingest for the embedded backend: `POST /v1/events`, NDJSON in the event contract (or ECS
log lines); `POST /v1/logs`, OpenTelemetry logs over OTLP/HTTP (`paywatch/otlp.py`);
authenticated reads on GET (`paywatch/app/embedded/queries.py`); `GET /healthz`.

The same contract as the Kafka topics, so a service moves between backends by changing
only where its SDK points. Each line is judged on its own: valid events go on, invalid
ones are dead-lettered with the line number and reason, and the response says which.

Served by uvicorn (HTTP/1.1: keep-alive, chunked bodies, `Expect: 100-continue`, idle
timeouts, graceful shutdown) with Starlette routing. What a reply means:
- 200/422: every accepted line is committed to the SQLite store and has been through the
  detectors; every refused line is dead-lettered. Only then is the reply sent.
- 401/404/413/415/429: nothing of the request was read beyond what the refusal needed, nothing
  stored. The token and the declared size are checked before the body is read (so a client
  waiting on `100-continue` never sends it).
- 429 + Retry-After: the bodies held at once (`embedded.inflight_bytes`) would go past the
  budget. Bodies queue for the one pipeline worker inside that budget, so memory is bounded
  however many clients push.
- 500: the store or the pipeline failed on this batch; nothing is acknowledged, retry.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
import zstandard
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from paywatch.app.embedded.health import HealthCheck, judge, report
from paywatch.app.embedded.pipeline import Overloaded
from paywatch.app.embedded.queries import Queries
from paywatch.app.embedded.settings import EmbeddedSettings
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.contract import ContractError, Event
from paywatch.intake import Intake, judge_lines
from paywatch.otlp import export_logs
from paywatch.pan import DEFAULT, PanSettings, mask_bytes, mask_event, mask_text

EventSink = Callable[[list[Event]], None]
Reply = tuple[int, dict[str, Any] | bytes, str]
JSON = "application/json"
RETRY_AFTER_S = 1
# zstd frames may ask for windows of up to 2 GiB; RFC 8878 asks HTTP decoders to support 8 MiB.
ZSTD_MAX_WINDOW = 8 << 20
log = structlog.get_logger("paywatch.app.embedded.ingest")


class Refused(Exception):
    """A request answered without using its body (or all of it)."""

    def __init__(self, status: int, error: str, retry_after: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.retry_after = retry_after


class _TooLarge(Exception):
    pass


class _Identity:
    def feed(self, chunk: bytes, room: int) -> bytes:
        if len(chunk) > room:
            raise _TooLarge
        return chunk

    def end(self) -> None:
        pass


class _Gzip:
    """zlib with an output cap per chunk: a gzip bomb stops at the body limit, not at the memory limit."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)

    def feed(self, chunk: bytes, room: int) -> bytes:
        out = b""
        while True:
            try:
                out += self._z.decompress(chunk, room - len(out) + 1)
            except zlib.error as exc:
                raise Refused(400, f"body is not valid gzip: {exc}") from None
            if len(out) > room:  # output under the cap means the whole chunk was consumed
                raise _TooLarge
            if not (self._z.eof and self._z.unused_data):
                return out
            chunk = self._z.unused_data  # another gzip member follows: RFC 1952 allows several
            self._z = zlib.decompressobj(wbits=31)

    def end(self) -> None:
        if not self._z.eof:
            raise Refused(400, "gzip body is cut short")


class _Zstd:
    """zstandard's stream writer hands its output over in pieces of about 128 KiB, and this
    writer refuses the piece that would go past the room left."""

    def __init__(self) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._writer = decompressor.stream_writer(self, write_return_read=True)
        self._out = bytearray()
        self._room = 0

    def write(self, data: bytes) -> int:
        if len(self._out) + len(data) > self._room:
            raise _TooLarge
        self._out += data
        return len(data)

    def feed(self, chunk: bytes, room: int) -> bytes:
        self._out, self._room = bytearray(), room
        try:
            self._writer.write(chunk)
        except zstandard.ZstdError as exc:
            raise Refused(400, f"body is not valid zstd: {exc}") from None
        return bytes(self._out)

    def end(self) -> None:
        pass


DECODERS: dict[str, Callable[[], _Identity | _Gzip | _Zstd]] = {
    "identity": _Identity,
    "gzip": _Gzip,
    "x-gzip": _Gzip,
    "zstd": _Zstd,
}


class InflightBudget:
    """Bytes of request bodies held at once, from the first byte read until the reply is sent.
    Only the event loop's thread takes and gives; /healthz reads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


@dataclass
class _Job:
    """One request's body, waiting for the pipeline worker; `reply` is set once it is stored and judged."""

    path: str
    body: bytes
    content_type: str
    reply: Future[Reply] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class IngestServer:
    """uvicorn in a background thread in front of an event sink; one worker thread feeds the sink
    in arrival order, so the detectors see one ordered stream. `start()` runs it, `stop()` ends it."""

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
        settings: EmbeddedSettings | None = None,
    ) -> None:
        """host, port and max_body_bytes override `settings` (tests bind port 0); `settings` gives
        the rest of the serving limits (in-flight budget, timeouts, backlog)."""
        if not token:
            raise ValueError("the ingest endpoint needs a bearer token (set it in the environment or a file)")
        limits = settings or EmbeddedSettings()
        self._sink = sink
        self._intake = intake or Intake()
        self._queries = queries
        self._store = store
        self._token = token.encode()
        self._max_body = max_body_bytes
        self._pan = pan
        self._body_timeout_s = limits.body_timeout_s
        self._stuck_after_s = limits.stuck_after_s
        self._shutdown_timeout_s = limits.shutdown_timeout_s
        self.budget = InflightBudget(max(limits.inflight_bytes, max_body_bytes))
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._busy_since: float | None = None
        # Health checks and GET queries run here, off the event loop; a hung one cannot block shutdown.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="paywatch-ingest-read")
        self.health: dict[str, HealthCheck] = {"store": self._store_check, "ingest": self._ingest_check}
        # Bound here, not by uvicorn, so that a port in use fails now, in the caller, as an OSError.
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it
        # every reply waits ~40 ms for the client's delayed ACK (Nagle).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(limits.listen_backlog)
        except OSError:
            self._socket.close()
            raise
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app(),
                http="h11",
                loop="asyncio",
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
                timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]  # used as a float
                timeout_graceful_shutdown=limits.shutdown_timeout_s,  # type: ignore[arg-type]
                server_header=False,
            )
        )
        self._thread: threading.Thread | None = None
        self._worker: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="paywatch-ingest-worker", daemon=True)
        self._worker.start()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])), name="paywatch-ingest", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded by the shutdown timeout), then the worker."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._shutdown_timeout_s + 2)
        self._socket.close()
        self._jobs.put(None)
        if self._worker is not None:
            self._worker.join(self._shutdown_timeout_s)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # The pipeline worker: the only caller of the sink.

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.reply.set_running_or_notify_cancel():
                continue  # its request was cancelled (shutdown) while it queued: nothing was acknowledged
            self._busy_since = time.monotonic()
            try:
                job.reply.set_result(self._process(job))
            except Refused as refused:
                job.reply.set_exception(refused)
            except Exception as exc:  # a bug or a failing store: this batch is not acknowledged
                log.error("ingest batch failed", path=job.path, error=mask_text(f"{type(exc).__name__}: {exc}"))
                job.reply.set_result((500, {"error": "the batch could not be stored; retry"}, JSON))
            finally:
                self._busy_since = None

    def _process(self, job: _Job) -> Reply:
        if job.path == "/v1/logs":
            return self._logs(job.body, job.content_type)
        accepted, rejected = judge_lines(job.body, self._intake, self._pan)
        for number, reason, raw in rejected:
            masked = mask_bytes(raw, self._pan)
            self._store.dead_letter("http:/v1/events", f"line {number}: {mask_text(reason)}", masked)
        if accepted:
            try:
                self._sink(accepted)
            except Overloaded as exc:  # nothing of this batch was stored: the client sends it again
                raise Refused(503, f"paywatch is catching up ({exc}); retry later", retry_after=True) from None
        reply = {
            "accepted": len(accepted),
            "rejected": [{"line": n, "reason": mask_text(r)} for n, r, _ in rejected],
        }
        return (422 if rejected else 200), reply, JSON

    def _logs(self, body: bytes, content_type: str) -> Reply:
        """OTLP/HTTP logs: the records that break the contract are dead-lettered and counted in the
        response's partial_success, as the OTLP specification asks; the others go on."""
        try:
            export = export_logs(body, content_type, None, self._intake)  # already decoded while read
        except ContractError as exc:
            return 400, {"error": mask_text(str(exc))}, JSON
        for number, reason, raw in export.rejected:
            self._store.dead_letter("http:/v1/logs", f"record {number}: {mask_text(reason)}", mask_bytes(raw))
        if export.events:
            self._sink([mask_event(e) for e in export.events])
        return 200, export.reply, export.reply_type

    # Health parts this server sees; others are added to `self.health` by whoever runs them.

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """Every registered part's verdict: what `/healthz` reports and the process's heartbeat carries."""
        return judge(self.health, self._executor)

    def _store_check(self) -> tuple[bool, str]:
        if self._store.ping():
            return True, f"{self._store.path} answers"
        return False, f"{self._store.path} did not answer within 2 s (a write holds it)"

    def _ingest_check(self) -> tuple[bool, str]:
        busy = 0.0 if self._busy_since is None else time.monotonic() - self._busy_since
        detail = (
            f"{self._jobs.qsize()} requests queued, {self.budget.used} of {self.budget.limit} body bytes held, "
            f"worker busy on one request for {busy:.1f} s"
        )
        return busy < self._stuck_after_s, detail

    # HTTP

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/events", self._post, methods=["POST"]),
                Route("/v1/logs", self._post, methods=["POST"]),
                Route("/healthz", self._healthz, methods=["GET"]),
                Route("/{path:path}", self._other, methods=["GET", "POST"]),
            ]
        )

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization")
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token)

    async def _post(self, request: Request) -> Response:
        if not self._authorised(request):
            return _reply(401, {"error": "missing or wrong bearer token"}, close=True)
        held = [0]
        try:
            body = await self._read(request, held)
            job = _Job(request.url.path, body, request.headers.get("content-type") or JSON)
            self._jobs.put(job)
            return _reply(*await asyncio.wrap_future(job.reply))
        except Refused as refused:
            return _reply(refused.status, {"error": str(refused)}, close=True, retry_after=refused.retry_after)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except asyncio.CancelledError:  # shutdown's grace period ran out: tell the client, do not log a traceback
            return _reply(503, {"error": "paywatch is shutting down; retry"}, close=True, retry_after=True)
        finally:
            self.budget.give(held[0])

    async def _read(self, request: Request, held: list[int]) -> bytes:
        """The decoded body, within the body limit and the in-flight budget, refused as soon as it
        is seen not to fit: by its declared length before any of it is read, else while it streams."""
        encoding = (request.headers.get("content-encoding") or "identity").strip().lower()
        if encoding not in DECODERS:
            raise Refused(415, f"Content-Encoding {encoding} is not supported; send gzip, zstd or none")
        decoder = DECODERS[encoding]()
        declared = int(request.headers.get("content-length") or 0)  # uvicorn refuses a malformed one
        if declared > self._max_body:
            raise Refused(413, f"body of {declared} bytes is over the {self._max_body}-byte limit")
        self._hold(declared, held)
        body = bytearray()
        wire = 0
        try:
            async with asyncio.timeout(self._body_timeout_s):
                async for chunk in request.stream():
                    wire += len(chunk)
                    if wire > self._max_body:
                        raise _TooLarge
                    body += decoder.feed(chunk, self._max_body - len(body))
                    self._hold(len(body), held)
        except _TooLarge:
            raise Refused(413, f"body is over the {self._max_body}-byte limit (after decoding)") from None
        except TimeoutError:
            raise Refused(408, f"the body did not arrive within {self._body_timeout_s:g} s") from None
        decoder.end()
        return bytes(body)

    def _hold(self, size: int, held: list[int]) -> None:
        """Grow this request's share of the in-flight budget to `size` bytes, or refuse it with 429."""
        more = size - held[0]
        if more <= 0:
            return
        if not self.budget.take(more):
            raise Refused(
                429, f"ingest is at capacity ({self.budget.limit} body bytes in flight); retry later", retry_after=True
            )
        held[0] = size

    async def _healthz(self, request: Request) -> Response:
        return _reply(*report(await asyncio.to_thread(self.verdicts)), JSON)

    async def _other(self, request: Request) -> Response:
        if request.method == "POST":
            path = request.url.path
            return _reply(
                404, {"error": f"no such endpoint {path}; events go to POST /v1/events, OTLP logs to /v1/logs"}
            )
        if not self._authorised(request):
            return _reply(401, {"error": "missing or wrong bearer token"})
        if self._queries is None:
            return _reply(404, {"error": "not found"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        loop = asyncio.get_running_loop()
        return _reply(*await loop.run_in_executor(self._executor, self._queries.get, target))


def _reply(
    status: int,
    reply: dict[str, Any] | bytes,
    content_type: str = JSON,
    *,
    close: bool = False,
    retry_after: bool = False,
) -> Response:
    """`close` when the body may be left unread: the client stops sending it and the connection is not reused."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if retry_after else {}
    if close:
        headers["Connection"] = "close"
    data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
    return Response(data, status_code=status, media_type=content_type, headers=headers)
