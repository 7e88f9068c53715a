"""The Kafka backend on REAL Kafka and Elasticsearch: messages produced raw with the corpus card
numbers in every free-text field and label, in id fields and in broken messages; none survives
in Elasticsearch (documents or search) or on the dead-letter topic, and Luhn-valid order ids
are stored whole and found by `payment.order_id`."""

from __future__ import annotations

import json

import pytest
from pan_corpus import ORDER_IDS, PANS, broken_lines, corpus_lines, id_field_lines, stuck_order_lines, survivors
from test_collector_e2e import collector_in_thread, count, make_config, produce, read_dead_letters, wait_for

from paywatch.collectors.dlq import REASON, headers_of

__all__ = ["collector_in_thread"]  # the fixture, used by name

pytestmark = [pytest.mark.kafka, pytest.mark.elasticsearch]


def test_no_card_number_survives_in_elasticsearch_or_dead_letters(kafka_bootstrap, es_url, es, collector_in_thread):
    config = make_config(kafka_bootstrap, es_url)
    topics = config.kafka.topics
    by_topic: dict[str, list[bytes]] = {topics.payments: [], topics.logs: [], topics.heartbeats: []}
    where = {"paywatch.payment": topics.payments, "paywatch.app": topics.logs, "paywatch.heartbeat": topics.heartbeats}
    for line in corpus_lines() + stuck_order_lines():
        by_topic[where[json.loads(line)["event"]["dataset"]]].append(line)
    bad = id_field_lines() + broken_lines()
    by_topic[topics.payments] += bad
    alert = {
        "@timestamp": "2026-11-26T10:00:01Z",
        "event": {"id": "pan-alert", "dataset": "paywatch.alert"},
        "alert": {
            "summary": f"orders paid with {PANS[0]}",
            "fingerprint": ORDER_IDS[7],
            "annotations": {"description": f"Orders: {', '.join(ORDER_IDS[:6])}"},
        },
        "payment": {"order_id": ORDER_IDS[:6]},
    }
    for topic, values in by_topic.items():
        produce(config, topic, values)
    produce(config, topics.alerts, [json.dumps(alert).encode()])
    collector_in_thread(config)
    expected = {
        "paywatch.payment": len(by_topic[topics.payments]) - len(bad),
        "paywatch.app": len(by_topic[topics.logs]),
        "paywatch.heartbeat": len(by_topic[topics.heartbeats]),
        "paywatch.alert": 1,
    }
    wait_for(
        lambda: all(count(es, config, ds) == n for ds, n in expected.items()), 180, "every corpus document indexed"
    )
    every = f"logs-paywatch.*-{config.elasticsearch.namespace}"
    hits = es.search(index=every, size=2000)["hits"]["hits"]
    assert len(hits) == sum(expected.values())
    assert survivors(json.dumps([h["_source"] for h in hits], ensure_ascii=False)) == []
    for pan in PANS:  # nor can a search find one, however Elasticsearch analysed the text
        found = es.search(index=every, query={"query_string": {"query": f"*{pan}* OR {pan}", "fields": ["*"]}})
        assert found["hits"]["total"]["value"] == 0, pan

    dead = read_dead_letters(config, len(bad))
    assert len(dead) == len(bad)
    letters = b"\n".join((m.value() or b"") + json.dumps(headers_of(m)).encode() for m in dead)
    assert survivors(letters) == []
    reasons = [headers_of(m)[REASON] for m in dead]
    assert sum("card number" in r for r in reasons) == len(id_field_lines())

    for order in ORDER_IDS[:6]:  # ids stored whole: the order is found by its id
        found = es.count(index=every, query={"term": {"payment.order_id": order}})["count"]
        assert found == 4, order  # created, requested, callback, and the alert naming it
    stored_alert = next(h["_source"] for h in hits if h["_source"]["event"]["id"] == "pan-alert")
    assert stored_alert["alert"]["fingerprint"] == ORDER_IDS[7]
    assert stored_alert["alert"]["annotations"]["description"] == f"Orders: {', '.join(ORDER_IDS[:6])}"
    assert stored_alert["alert"]["summary"] == f"orders paid with {PANS[0][:6]}******{PANS[0][-4:]}"
