"""The embedded ingest's HTTP layer over real sockets: what Java, Go and curl clients send
(chunked bodies, gzip and zstd bodies, `Expect: 100-continue`, keep-alive), the limits that
hold while a body streams (a gzip bomb stops at the body limit), back-pressure (429 with
Retry-After past the in-flight budget) and /healthz naming the part that is stuck. The body
decoders are fuzzed; the `@example`s are the kept corpus (add each failure hypothesis finds)."""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import zstandard
from embedded_process import app_lines
from hypothesis import example, given, settings
from hypothesis import strategies as st

from paywatch.app.embedded.ingest import DECODERS, IngestServer, Refused, _TooLarge
from paywatch.app.embedded.settings import EmbeddedSettings
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.contract import Event

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1 << 20


def body(first: int, count: int) -> bytes:
    return app_lines(f"e{first}", count)


class Served:
    """A real IngestServer whose sink stores into SQLite, and can be held (a stuck pipeline)."""

    def __init__(self, tmp_path, **limits) -> None:
        self.store = SqliteStore(tmp_path / "pw.sqlite")
        self.release = threading.Event()
        self.release.set()
        settings = EmbeddedSettings(**{"max_body_bytes": LIMIT, "inflight_bytes": 4 * LIMIT, **limits})
        self.server = IngestServer(self.sink, self.store, TOKEN, "127.0.0.1", 0, LIMIT, settings=settings)
        self.server.start()
        self.url = self.server.url

    def sink(self, events: list[Event]) -> None:
        self.release.wait(60)
        self.store.write(msgspec.to_builtins(events))

    def stored(self) -> int:
        return self.store.count("paywatch.app")


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.release.set()
    s.server.stop()
    s.store.close()


def curl(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    out = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    text, _, code = out.stdout.rpartition("\n")
    return int(code), text, time.monotonic() - started


def test_a_chunked_body_is_stored(served):
    def chunks() -> Iterator[bytes]:  # httpx sends an iterator as Transfer-Encoding: chunked
        for i in range(5):
            yield body(i * 10, 10)

    r = httpx.post(f"{served.url}/v1/events", content=chunks(), headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 50
    assert served.stored() == 50


def test_curl_chunked_gzip_zstd_and_100_continue_uploads_are_stored(served, tmp_path):
    plain, gz, zst = tmp_path / "b.ndjson", tmp_path / "b.ndjson.gz", tmp_path / "b.ndjson.zst"
    plain.write_bytes(body(0, 200))
    gz.write_bytes(gzip.compress(body(200, 200)))
    zst.write_bytes(zstandard.ZstdCompressor().compress(body(400, 200)))
    url, auth = f"{served.url}/v1/events", f"Authorization: Bearer {TOKEN}"
    code, text, _ = curl(url, "-H", auth, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{plain}")
    assert (code, json.loads(text)["accepted"]) == (200, 200)
    code, text, _ = curl(url, "-H", auth, "-H", "Content-Encoding: gzip", "--data-binary", f"@{gz}")
    assert (code, json.loads(text)["accepted"]) == (200, 200)
    code, text, _ = curl(url, "-H", auth, "-H", "Content-Encoding: zstd", "--data-binary", f"@{zst}")
    assert (code, json.loads(text)["accepted"]) == (200, 200)
    assert served.stored() == 600
    # curl waits up to 1 s for `100 Continue` before sending a body it announced with Expect.
    code, text, took = curl(url, "-H", auth, "-H", "Expect: 100-continue", "--data-binary", f"@{plain}")
    assert code == 200 and took < 0.9, took
    assert served.stored() == 600  # the same lines again: stored once


def test_httpx_gzip_upload_is_stored(served):
    r = httpx.post(
        f"{served.url}/v1/events",
        content=gzip.compress(body(0, 30)),
        headers={**AUTH, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 30
    assert served.stored() == 30


def test_a_wrong_token_is_refused_before_the_body_is_sent(served, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(body(0, 2000))
    code, text, took = curl(
        f"{served.url}/v1/events", "-H", "Authorization: Bearer wrong", "-H", "Expect: 100-continue",
        "--data-binary", f"@{big}",
    )  # fmt: skip
    assert code == 401 and "bearer token" in text and took < 0.9
    assert served.stored() == 0


@pytest.mark.parametrize("encoding", ["identity", "gzip", "zstd"])
def test_bodies_over_the_limit_are_refused_while_they_stream(served, encoding):
    """A gzip or zstd bomb (64 MiB of zeros in a few KiB) stops at the 1 MiB body limit."""
    huge = b"\n" * (64 << 20) if encoding != "identity" else b"x"
    compress = {"identity": lambda b: b, "gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}
    content = compress[encoding](huge)

    def streamed() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        yield content
        if encoding == "identity":
            for _ in range(LIMIT // 65536 + 2):
                yield b"x" * 65536

    r = httpx.post(f"{served.url}/v1/events", content=streamed(), headers={**AUTH, "Content-Encoding": encoding})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["error"]
    declared = httpx.post(f"{served.url}/v1/events", content=b"x" * (LIMIT + 1), headers=AUTH)
    assert declared.status_code == 413


def test_bad_bodies_are_one_clear_answer(served):
    url = f"{served.url}/v1/events"
    r = httpx.post(url, content=b"not gzip", headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = httpx.post(url, content=gzip.compress(body(0, 50))[:-20], headers={**AUTH, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "cut short" in r.json()["error"]
    r = httpx.post(url, content=b"x", headers={**AUTH, "Content-Encoding": "br"})
    assert r.status_code == 415
    with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])), timeout=5) as s:
        s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert served.stored() == 0


def read_reply(f) -> tuple[bytes, dict]:
    """One HTTP/1.1 response off a connection: its status line and its JSON body."""
    status = f.readline()
    length = 0
    while (line := f.readline()) != b"\r\n":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, json.loads(f.read(length))


def test_one_keep_alive_connection_carries_many_requests(served):
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for i in range(3):
            payload = body(i, 1)
            s.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )  # fmt: skip
            status, reply = read_reply(f)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert reply["accepted"] == 1
    assert served.stored() == 3


def test_past_the_inflight_budget_the_answer_is_429_with_retry_after(tmp_path):
    """The pipeline is held (a stuck stage): bodies fill the in-flight budget, then each new one is
    refused at once with 429 and Retry-After; nothing refused is stored, everything accepted is.
    /healthz names the stuck part and answers 503 until the pipeline moves again."""
    served = Served(tmp_path, inflight_bytes=LIMIT, stuck_after_s=0.5)
    served.release.clear()
    try:
        held = body(0, 3000)  # ~0.6 MiB: a second one does not fit in the 1 MiB budget
        assert 0.5 * LIMIT < len(held) < LIMIT
        with httpx.Client(timeout=30) as client:
            first = threading.Thread(target=lambda: client.post(f"{served.url}/v1/events", content=held, headers=AUTH))
            first.start()
            time.sleep(1.0)  # the first body is read and waits for the pipeline
            refused = httpx.post(f"{served.url}/v1/events", content=body(5000, 3000), headers=AUTH, timeout=5)
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            health = httpx.get(f"{served.url}/healthz", timeout=5)
            assert health.status_code == 503
            assert health.json()["parts"]["ingest"]["ok"] is False
            assert health.json()["parts"]["store"]["ok"] is True
            served.release.set()
            first.join(30)
        assert served.stored() == 3000
        assert httpx.get(f"{served.url}/healthz", timeout=5).json()["status"] == "ok"
    finally:
        served.release.set()
        served.server.stop()
        served.store.close()


def test_a_registered_health_part_that_hangs_turns_healthz_red(served):
    served.server.health["alert_delivery"] = lambda: (time.sleep(10), (True, "never"))[1]
    started = time.monotonic()
    r = httpx.get(f"{served.url}/healthz", timeout=10)
    assert r.status_code == 503 and time.monotonic() - started < 5
    assert r.json()["parts"]["alert_delivery"] == {"ok": False, "detail": "no answer within 2 s"}
    assert r.json()["parts"]["store"]["ok"] is True
    # What the process's heartbeat reads is bounded the same way.
    started = time.monotonic()
    verdicts = {name: v["ok"] for name, v in served.server.verdicts().items()}
    assert verdicts == {name: v["ok"] for name, v in r.json()["parts"].items()}
    assert time.monotonic() - started < 5


def _decode(encoding: str, data: bytes, cuts: list[int], limit: int) -> bytes:
    """What the ingest does with a body arriving in pieces cut at `cuts`."""
    decoder = DECODERS[encoding]()
    out = bytearray()
    edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    for start, end in itertools.pairwise(edges):
        out += decoder.feed(data[start:end], limit - len(out))
    decoder.end()
    return bytes(out)


COMPRESS = {
    "identity": lambda b: b,
    "gzip": gzip.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000), st.lists(st.integers(0, 5000), max_size=8), st.sampled_from(sorted(COMPRESS)))
@example(b"", [], "gzip")
@example(b"\n" * 3000, [1, 2, 3], "zstd")
def test_any_body_in_any_chunking_decodes_to_itself(body: bytes, cuts: list[int], encoding: str) -> None:
    assert _decode(encoding, COMPRESS[encoding](body), cuts, LIMIT) == body


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=500), min_size=2, max_size=4), st.lists(st.integers(0, 3000), max_size=6))
def test_concatenated_gzip_members_are_one_body(parts: list[bytes], cuts: list[int]) -> None:
    assert _decode("gzip", b"".join(gzip.compress(p) for p in parts), cuts, LIMIT) == b"".join(parts)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=6), st.sampled_from(["gzip", "zstd"]))
@example(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", [], "gzip")  # a gzip header and nothing after it
@example(b"\x28\xb5\x2f\xfd", [], "zstd")  # a zstd magic number and nothing after it
def test_garbage_is_refused_with_one_answer(garbage: bytes, cuts: list[int], encoding: str) -> None:
    """Whatever a producer sends: a body, a 400, or a 413 — never another exception."""
    try:
        _decode(encoding, garbage, cuts, 2000)
    except Refused as refused:
        assert refused.status == 400
    except _TooLarge:
        pass


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200_000), st.sampled_from(["gzip", "zstd"]))
def test_decoded_output_never_passes_the_limit(limit: int, encoding: str) -> None:
    bomb = COMPRESS[encoding](b"\n" * (limit + 1))
    with pytest.raises(_TooLarge):
        _decode(encoding, bomb, [], limit)
    assert _decode(encoding, COMPRESS[encoding](b"\n" * limit), [], limit) == b"\n" * limit


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(tmp_path):
    served = Served(tmp_path, keepalive_timeout_s=1)
    try:
        port = int(served.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            f = s.makefile("rb")
            status, reply = read_reply(f)
            assert status.startswith(b"HTTP/1.1 200") and reply["status"] == "ok"
            started = time.monotonic()
            assert f.read(1) == b""  # the server closed the idle connection
            assert 0.5 < time.monotonic() - started < 5
    finally:
        served.server.stop()
        served.store.close()
