"""One poisoned line among good ones, over real HTTP into the embedded pipeline: it is dead-lettered
with its reason, the good lines of the same request are stored *and judged*, and detection keeps
running (before, a non-UTF-8 byte lost the whole request and `interval_s: 1e308` crashed detection
after the batch was stored)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from live_pipeline import Live, running


@pytest.fixture
def live(tmp_path) -> Iterator[Live]:
    with running(tmp_path) as env:
        yield env


def beat(live: Live, service: str, seq: int = 1, interval: object = 10) -> bytes:
    return json.dumps(
        {
            "@timestamp": live.clock.now().isoformat().replace("+00:00", "Z"),
            "event": {"id": f"{service}-{seq}", "dataset": "paywatch.heartbeat"},
            "service": {"name": service, "instance": {"id": f"{service}-1"}},
            "heartbeat": {"interval_s": interval, "seq": seq, "status": "up"},
        }
    ).encode()


POISON = {
    "non-utf8": lambda live: b'{"@timestamp": "2026-11-26T12:00:00Z", "message": "caf\xe9 \xff"}',
    "interval-1e308": lambda live: beat(live, "poisoned", interval=1e308),
    "amount-beyond-int64": lambda live: beat(live, "x").replace(
        b'"heartbeat"', b'"payment": {"order_id": "o", "amount_minor": 9223372036854775808}, "heartbeat"'
    ),
    "nested-too-deep": lambda live: b'{"labels":' * 3000 + b"1" + b"}" * 3000,
    "card-number-as-order-id": lambda live: (
        b'{"@timestamp": "2026-11-26T12:00:00Z", "event": {"id": "p1", '
        b'"dataset": "paywatch.payment", "action": "order_created"}, "service": {"name": "gw", "instance": {"id": '
        b'"gw-1"}}, "payment": {"order_id": "4111111111111111"}}'
    ),
}


@pytest.mark.parametrize("poison", list(POISON))
def test_one_poisoned_line_is_dead_lettered_and_the_rest_stored_and_judged(live, poison):
    body = [beat(live, "svc-a"), POISON[poison](live), beat(live, "svc-b")]
    reply = live.post(*body)
    assert reply.status_code == 422
    [rejected] = reply.json()["rejected"]
    assert rejected["line"] == 2 and rejected["reason"]
    assert "4111111111111111" not in reply.text
    [letter] = live.store.dead_letters()
    assert letter["reason"].startswith("line 2: ") and b"4111111111111111" not in letter["raw"]
    assert live.store.count("paywatch.heartbeat") == 2
    # judged: both good services are in the heartbeat table and die on time; the pipeline keeps going
    assert {s for s, _ in live.pipeline.detection.heartbeats.instances} == {"svc-a", "svc-b"}
    live.run(40)
    assert sorted(f.service.name for f in live.opened("service_down")) == ["svc-a", "svc-b"]
    assert live.post(beat(live, "svc-a", seq=2)).status_code == 200
