"""The embedded backend's HTTP ingest: sustained events/s and p99 request latency at 1, 4 and 16
concurrent clients, beside the floor of the same job, and the memory ceiling under overload.

    .venv/bin/python bench/ingest.py [--seconds 10] [--batch 100] [--clients 1,4,16]

Both sides are real processes on real sockets, driven by the same client processes (one httpx
client each, keep-alive, batches of `--batch` payment events as the SDK sends them):
- paywatch: `paywatch run --embedded` (auth, per-line judgement, PAN masking, SQLite, detectors,
  alerting: everything a 200 promises);
- the floor: a minimal Starlette endpoint on the same uvicorn settings that only reads the body
  and counts its lines — what any HTTP ingest on this stack costs before it does anything.
They alternate per concurrency level, and the script prints paywatch's share of the floor's
rate. Also printed: the same lines decoded and written straight into the SQLite store in one
process (no HTTP, no detectors), the storage floor.

Overload: `--overload-clients` clients push ~1.7 MB bodies as fast as they are answered at a
process whose in-flight budget is 8 MiB; the script prints how many were answered 429 and the
process's peak RSS (VmHWM) above its idle RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import msgspec

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payment_lines(prefix: str, count: int, pad: int = 0) -> bytes:
    note = "x" * pad
    return b"".join(
        json.dumps(
            {
                "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": {
                    "id": f"{prefix}-{n}",
                    "dataset": "paywatch.payment",
                    "action": "payment_requested",
                    "outcome": "unknown",
                },
                "service": {"name": "payment-gateway", "instance": {"id": "gw-1"}},
                "payment": {
                    "order_id": f"ord-{prefix}-{n}",
                    "attempt_id": f"att-{prefix}-{n}",
                    "channel": "alipay",
                    "amount_minor": 1250,
                    "currency": "CNY",
                },
                "message": note,
            }
        ).encode()
        + b"\n"
        for n in range(count)
    )


def serve_floor(port: int) -> None:
    """The floor server (run as its own process): read the body, count lines, answer."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def events(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"accepted": body.count(b"\n"), "rejected": []})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/v1/events", events, methods=["POST"]), Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=port, http="h11", loop="asyncio", log_level="warning", lifespan="off")


class Server:
    def __init__(self, kind: str, workdir: Path, **embedded: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        if kind == "floor":
            args = [sys.executable, __file__, "--serve-floor", str(self.port)]
        else:
            settings = {"database": str(workdir / f"{uuid.uuid4().hex}.sqlite"), "listen_port": self.port, **embedded}
            config = workdir / f"{self.port}.yaml"
            config.write_text(json.dumps({"embedded": settings, "alerts": {"alertmanager": {"urls": []}}}))
            args = [sys.executable, "-m", "paywatch.app.cli", "run", "--embedded", "--config", str(config)]
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, "PAYWATCH_INGEST_TOKEN": self.token},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not self._healthy():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"{kind} server did not start")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_mib(self, field: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def client(
    url: str, token: str, name: str, seconds: float, batch: int, pad: int
) -> tuple[int, list[float], Counter, float, float]:
    """One client process: post batches until the time is up; (events acknowledged, latencies,
    statuses, start, end). The monotonic clock is the machine's, so the clients' spans compare."""
    acked, latencies, statuses = 0, [], Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        began = time.monotonic()
        end = began + seconds
        n = 0
        while time.monotonic() < end:
            body = payment_lines(f"{name}-{n}", batch, pad)
            n += 1
            started = time.perf_counter()
            try:
                r = http.post(f"{url}/v1/events", content=body)
            except httpx.HTTPError:
                statuses["error"] += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                acked += batch
            elif r.status_code == 429:
                time.sleep(float(r.headers.get("Retry-After", 1)) / 10)  # keep the pressure on
    return acked, latencies, statuses, began, time.monotonic()


def drive(server: Server, clients: int, seconds: float, batch: int, pad: int = 0) -> tuple[float, float, Counter]:
    """Events acknowledged per second of wall clock, p99 request latency (ms), statuses."""
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        args = [(server.url, server.token, f"{uuid.uuid4().hex[:8]}-{i}", seconds, batch, pad) for i in range(clients)]
        results = pool.starmap(client, args)
    wall = max(r[4] for r in results) - min(r[3] for r in results)  # from the first request to the last reply
    acked = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    statuses = sum((r[2] for r in results), Counter())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")
    return acked / wall, p99, statuses


def store_floor(workdir: Path, events: int, batch: int) -> float:
    """The same lines decoded and written straight into the SQLite store: events/s."""
    from paywatch.app.embedded.sqlite_store import SqliteStore
    from paywatch.contract import decode

    store = SqliteStore(workdir / "floor.sqlite")
    started = time.perf_counter()
    for n in range(events // batch):
        lines = payment_lines(f"floor-{n}", batch).splitlines()
        store.write(msgspec.to_builtins([decode(line) for line in lines]))
    took = time.perf_counter() - started
    store.close()
    return (events // batch) * batch / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency level and side")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels")
    parser.add_argument("--overload-clients", type=int, default=32)
    parser.add_argument("--overload-seconds", type=float, default=15.0)
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    levels = [int(c) for c in args.clients.split(",")]
    print(f"cpus={os.cpu_count()} load average {os.getloadavg()[0]:.1f}; batches of {args.batch} payment events")
    with tempfile.TemporaryDirectory(prefix="paywatch-bench-ingest-") as tmp:
        workdir = Path(tmp)
        for clients in levels:
            results = {}
            for kind in ("floor", "paywatch"):
                server = Server(kind, workdir)
                try:
                    results[kind] = drive(server, clients, args.seconds, args.batch)
                finally:
                    server.stop()
            (rate, p99, statuses), (floor_rate, floor_p99, _) = results["paywatch"], results["floor"]
            print(
                f"{clients:>2} clients: paywatch {rate:,.0f} events/s, p99 {p99:.1f} ms | floor (read the body only) "
                f"{floor_rate:,.0f} events/s, p99 {floor_p99:.1f} ms | paywatch = {rate / floor_rate:.2f}× the floor's "
                f"rate, p99 {p99 / floor_p99:.1f}× | statuses {dict(statuses)}"
            )
        events = max(args.batch * 20, int(args.seconds * 2000))
        print(f"storage floor: {store_floor(workdir, events, args.batch):,.0f} events/s decoded and written to SQLite")
        server = Server("paywatch", workdir, max_body_bytes=2 * MIB, inflight_bytes=8 * MIB)
        try:
            idle = server.rss_mib()
            _, p99, statuses = drive(server, args.overload_clients, args.overload_seconds, 1000, pad=1500)
            peak = server.rss_mib("VmHWM")
        finally:
            server.stop()
        print(
            f"overload: {args.overload_clients} clients × ~1.7 MB bodies for {args.overload_seconds:g} s at an 8 MiB "
            f"in-flight budget: statuses {dict(statuses)}; RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB "
            f"(+{peak - idle:.0f} MiB)"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
