"""The alert documents under their shipped mapping in a REAL Elasticsearch: accepted as is,
typed as declared, one document per change however often it is published, found by order id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alerts_support import rules, stuck
from elasticsearch import ConflictError

from paywatch.alerts.document import alert_document
from paywatch.alerts.engine import AlertEngine, Links
from paywatch.alerts.model import Delivery
from paywatch.collectors.templates import install_templates
from paywatch.elastic import data_stream


def test_alert_history_is_stored_typed_and_searchable_by_order(es):
    install_templates(es)
    stream = data_stream("paywatch.alert", f"t{uuid.uuid4().hex[:8]}")
    engine = AlertEngine(rules(), links=Links(kibana_url="http://kibana:5601"))
    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    changes = [c for i in range(3) for c in engine.on_finding(stuck(f"o{i}", t0 + timedelta(seconds=i)))]
    changes += [c for i in range(3) for c in engine.on_finding(stuck(f"o{i}", t0 + timedelta(minutes=9), "resolved"))]
    delivery = Delivery("alertmanager", (changes[0].alert.fingerprint,), True, 2, 200)
    docs = [alert_document(c, [delivery]) for c in changes]
    for doc in docs:
        es.index(index=stream, id=doc["event"]["id"], document=doc, op_type="create", refresh=True)
    for doc in docs:  # published again by a replay after restart: the same _id, refused as a duplicate
        with pytest.raises(ConflictError):
            es.index(index=stream, id=doc["event"]["id"], document=doc, op_type="create")

    def history(order: str) -> list[str]:
        hits = es.search(index=stream, query={"term": {"payment.order_id": order}}, sort=[{"@timestamp": "asc"}])
        return [h["_source"]["event"]["action"] for h in hits["hits"]["hits"]]

    assert history("o0") == ["opened", "fired", "resolved"]
    assert history("o2") == ["fired", "resolved"]  # it joined the alert when it paged

    mapping = next(iter(es.indices.get_mapping(index=stream).values()))["mappings"]["properties"]
    alert = mapping["alert"]["properties"]
    assert alert["starts_at"]["type"] == "date" and alert["page"]["type"] == "boolean"
    assert alert["annotations"]["properties"]["summary"]["type"] == "text"
    assert alert["deliveries"]["properties"]["ok"]["type"] == "boolean"
    assert mapping["payment"]["properties"]["order_id"]["type"] == "keyword"
    assert es.count(index=stream, query={"term": {"alert.deliveries.ok": True}})["count"] == 3
    es.indices.delete_data_stream(name=stream)
