"""The collector's pure core: messages → bulk lines or dead letters; templates; health metrics."""

from __future__ import annotations

import json
import random
import urllib.request
from datetime import UTC, datetime

import msgspec
import pytest
from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families

from paywatch import contract
from paywatch.collectors.collector import CollectorHealth, build_batch, chunks, routes
from paywatch.collectors.templates import component_templates, index_templates, owner_mapping
from paywatch.devstack import free_port
from paywatch.elastic import DATASETS
from paywatch.finding import encode_finding, make_finding
from paywatch.metrics import start_metrics_server
from paywatch.pan import mask_event, may_contain_pan
from paywatch.settings import Topics

NOW = datetime(2026, 11, 22, 10, 0, 5, 250000, tzinfo=UTC)
PAN = "4111111111111111"  # Visa test number, passes Luhn
TOPICS = Topics()
TABLE = routes(TOPICS, "unit", max_event_bytes=4096)


def payment(event_id: str = "e1", **over: object) -> dict:
    doc = {
        "@timestamp": "2026-11-22T10:00:00.123Z",
        "event": {"id": event_id, "dataset": "paywatch.payment", "action": "channel_callback"},
        "service": {"name": "callback-receiver", "instance": {"id": "cb-1"}},
        "payment": {"order_id": "o1", "attempt_id": "a1", "channel": "alipay", "amount_minor": 1250},
    }
    doc.update(over)
    return doc


def alert_doc(**over: object) -> dict:
    doc = {"@timestamp": "2026-11-22T10:00:01Z", "event": {"id": "al-1", "dataset": "paywatch.alert"}}
    doc.update(over)
    return doc


def msg(value: bytes | dict | None, topic: str = TOPICS.payments, partition: int = 0, offset: int = 0) -> Message:
    raw = json.dumps(value).encode() if isinstance(value, dict) else value
    return Message(topic=topic, partition=partition, offset=offset, value=raw, key=b"k")


def bulk_pairs(batch) -> list[tuple[dict, dict]]:
    out = []
    for line in batch.lines:
        action, source, rest = line.split(b"\n")
        assert rest == b""
        out.append((json.loads(action), json.loads(source)))
    return out


def test_valid_event_becomes_a_create_with_event_id_and_processing_time():
    batch = build_batch([msg(payment("evt-42"))], TABLE, NOW, 4096)
    [(action, source)] = bulk_pairs(batch)
    assert action == {"create": {"_index": "logs-paywatch.payment-unit", "_id": "evt-42"}}
    assert source["event"]["ingested"] == "2026-11-22T10:00:05.250000Z"
    # event time is the producer's, untouched
    assert contract.decode(json.dumps(source)).timestamp == datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)
    assert source["payment"]["amount_minor"] == 1250
    assert batch.dead == []


def test_each_topic_goes_to_its_own_data_stream():
    heartbeat = payment(
        "hb-1",
        event={"id": "hb-1", "dataset": "paywatch.heartbeat"},
        heartbeat={"interval_s": 10, "seq": 3, "status": "up"},
    )
    del heartbeat["payment"]
    finding = make_finding(
        at=NOW, kind="duplicate_charge", state="open", fingerprint="fp", severity="warning", summary="two charges"
    )
    batch = build_batch(
        [
            msg(heartbeat, TOPICS.heartbeats),
            msg(encode_finding(finding), TOPICS.findings),
            msg(alert_doc(), TOPICS.alerts),
            msg(alert_doc(event={"id": "ac-1", "dataset": "paywatch.action"}), TOPICS.actions),
        ],
        TABLE,
        NOW,
        4096,
    )
    assert batch.dead == []
    indexes = [a["create"]["_index"] for a, _ in bulk_pairs(batch)]
    assert indexes == [
        "logs-paywatch.heartbeat-unit",
        "logs-paywatch.finding-unit",
        "logs-paywatch.alert-unit",
        "logs-paywatch.action-unit",
    ]
    assert all(s["event"]["ingested"] == "2026-11-22T10:00:05.250000Z" for _, s in bulk_pairs(batch))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msg(b"{not json"), "paywatch.payment: not valid JSON"),
        (msg(payment(payment={"order_id": "o1", "amount_minor": "12.50"})), "$.payment.amount_minor"),
        # no event.id is allowed (ECS lines get one derived from their content), no action is not
        (msg(payment(event={"dataset": "paywatch.payment"})), "event.action None is not one of"),
        (msg(payment(event={"id": "", "dataset": "paywatch.payment"})), "$.event.id"),
        (msg(payment(event={"id": "x", "dataset": "paywatch.refunds"})), "$.event.dataset"),
        (
            msg(payment(event={"id": "x", "dataset": "paywatch.app"}, log={"level": "info"}, message="m")),
            "event.dataset 'paywatch.app' on a topic that carries 'paywatch.payment'",
        ),
        (msg(payment(message="x" * 5000)), "over the 4096-byte limit"),
        (msg(None), "empty message"),
        (msg(b"[]", TOPICS.alerts), "paywatch.alert: Expected `object`, got `array`"),
        (msg(alert_doc(**{"@timestamp": "yesterday"}), TOPICS.alerts), "$.@timestamp"),
        (msg(alert_doc(event={"id": "a"}), TOPICS.alerts), "missing required field `dataset`"),
        (
            msg(alert_doc(event={"id": "a", "dataset": "paywatch.action"}), TOPICS.alerts),
            "event.dataset 'paywatch.action' on a topic that carries 'paywatch.alert'",
        ),
        (msg(b'{"@timestamp": 1}', TOPICS.findings), "paywatch.finding:"),
        (msg(payment(), "some.other.topic"), "no dataset is stored from topic 'some.other.topic'"),
    ],
)
def test_invalid_messages_become_dead_letters_with_a_precise_reason(message, reason):
    batch = build_batch([msg(payment("ok")), message], TABLE, NOW, 4096)
    assert [a["create"]["_id"] for a, _ in bulk_pairs(batch)] == ["ok"]
    [(dead, why)] = batch.dead
    assert dead is message
    assert reason in why


def test_offsets_to_commit_cover_good_and_dead_messages_per_partition():
    batch = build_batch(
        [
            msg(payment("a"), partition=0, offset=7),
            msg(b"bad", partition=0, offset=8),
            msg(payment("b"), partition=3, offset=2),
        ],
        TABLE,
        NOW,
        4096,
    )
    assert batch.offsets == {(TOPICS.payments, 0): 9, (TOPICS.payments, 3): 3}
    assert [m.offset() for m in batch.messages] == [7, 2]


def test_pans_are_masked_in_every_dataset_before_storage():
    spaced = "4111 1111 1111 1111"
    messages = [
        msg(payment(message=f"card {PAN}", labels={"note": spaced})),
        msg(alert_doc(alert={"summary": f"customer card {PAN}"}), TOPICS.alerts),
        msg(
            encode_finding(
                make_finding(
                    at=NOW, kind="duplicate_charge", state="open", fingerprint="f", severity="warning", summary=PAN
                )
            ),
            TOPICS.findings,
        ),
    ]
    batch = build_batch(messages, TABLE, NOW, 4096)
    body = b"".join(batch.lines)
    assert PAN.encode() not in body and spaced.encode() not in body
    assert body.count(b"411111******1111") == 3 and body.count(b"4111 11** **** 1111") == 1


def test_pan_written_with_json_unicode_escapes_is_still_masked():
    escaped = b'"' + b"".join(b"\\u%04x" % ord(c) for c in PAN) + b'"'
    raw = json.dumps(payment()).encode().replace(b'"alipay"', escaped)
    batch = build_batch([msg(raw)], TABLE, NOW, 4096)
    [(_, source)] = bulk_pairs(batch)
    assert source["payment"]["channel"] == "411111******1111"


def test_may_contain_pan_never_misses_what_mask_event_would_mask():
    """For every message: masking changes it ⇒ the pre-check said "may contain a PAN". The count
    at the end keeps the property from holding vacuously (masking must really happen, often)."""
    rng = random.Random(7)
    alphabet = '0123456789 -ab/"\\\t'
    injected = masked = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            injected += 1
            text = text[:5] + rng.choice([PAN, "4111-1111-1111-1111", "5500 0000 0000 0004"]) + text[5:]
        raw = json.dumps(payment(message=text), ensure_ascii=rng.random() < 0.5).encode()
        changed = mask_event(contract.decode(raw)).message != text
        assert may_contain_pan(raw) or not changed, raw
        masked += changed
    assert masked >= 0.9 * injected > 0


def test_chunks_respect_the_bulk_size_limit_and_keep_order():
    lines = [b"x" * n for n in (40, 40, 40, 200, 10)]
    assert list(chunks(lines, [0, 1, 2, 3, 4], 100)) == [[0, 1], [2], [3], [4]]
    assert list(chunks(lines, [4, 0], 100)) == [[4, 0]]


def test_templates_map_ids_as_keywords_money_as_long_times_as_dates():
    components = component_templates()
    templates = index_templates()
    assert set(templates) == {f"logs-{d}" for d in DATASETS}
    for dataset in DATASETS:
        t = templates[f"logs-{dataset}"]
        assert t["index_patterns"] == [f"logs-{dataset}-*"] and t["data_stream"] == {}
        assert all(name in components for name in t["composed_of"])
    common = components["paywatch@mappings"]["mappings"]["properties"]
    assert common["@timestamp"]["type"] == "date"
    assert common["event"]["properties"]["ingested"]["type"] == "date"
    assert common["event"]["properties"]["id"]["type"] == "keyword"
    pay = components["paywatch.payment@mappings"]["mappings"]["properties"]["payment"]["properties"]
    assert pay["amount_minor"]["type"] == "long"
    assert pay["order_id"]["type"] == pay["attempt_id"]["type"] == "keyword"


def test_owner_mapping_is_absent_until_the_owner_ships_it(tmp_path, monkeypatch):
    pkg = tmp_path / "ownerpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert owner_mapping("ownerpkg") == {}
    mapping = {"properties": {"alert": {"properties": {"state": {"type": "keyword"}}}}}
    (pkg / "es_mapping.json").write_text(json.dumps(mapping))
    assert owner_mapping("ownerpkg") == mapping


def _samples(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (
            sample.name,
            tuple(sorted((k, v) for k, v in sample.labels.items() if not k.startswith("otel_"))),
        ): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_health_metrics_are_served_for_prometheus():
    """Counters are process-wide (other tests' collectors count too): judge what this batch added."""
    port = free_port()
    server = start_metrics_server(port)
    try:
        before = _samples(port)
        health = CollectorHealth()
        health.record_batch(indexed=5, duplicates=2, invalid=1, rejected=1, seconds=0.5)
        health.bulk_latency(0.02)
        health.paused(True)
        after = _samples(port)
    finally:
        server.shutdown()

    def added(name: str, *labels: tuple[str, str]) -> float:
        return after[(name, labels)] - before.get((name, labels), 0)

    assert added("paywatch_collector_events_total", ("result", "indexed")) == 5
    assert added("paywatch_collector_events_total", ("result", "dead_lettered")) == 2
    assert added("paywatch_collector_dead_letters_total", ("kind", "invalid")) == 1
    assert after[("paywatch_collector_events_per_second", ())] == 18
    assert added("paywatch_collector_bulk_duration_seconds_count") == 1
    assert after[("paywatch_collector_paused", ())] == 1


def test_decoded_ids_survive_masking_untouched():
    order = "2026112600000003"  # a numeric order id that passes Luhn stays an id
    batch = build_batch(
        [msg(payment(payment={"order_id": order, "attempt_id": "a", "channel": "c"}, message=f"order {order}"))],
        TABLE,
        NOW,
        4096,
    )
    [(_, source)] = bulk_pairs(batch)
    stored = msgspec.json.decode(json.dumps(source))
    assert stored["payment"]["order_id"] == order and stored["message"] == f"order {order}"


def test_an_order_id_that_is_a_card_number_is_dead_lettered_with_the_reason():
    batch = build_batch([msg(payment(payment={"order_id": PAN, "attempt_id": "a", "channel": "c"}))], TABLE, NOW, 4096)
    assert not batch.lines
    [(_, reason)] = batch.dead
    assert reason.endswith("payment.order_id is a Visa card number: card numbers must not be sent to paywatch")


def test_an_ordinary_event_takes_the_fast_path_without_field_masking():
    assert not may_contain_pan(json.dumps(payment()).encode())
    assert may_contain_pan(json.dumps(payment(message=f"card {PAN}")).encode())
