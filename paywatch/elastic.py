"""Elasticsearch wiring shared by every stage: the client, and where each dataset is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywatch.finding import INCIDENT_KINDS
from paywatch.secrets import read_secret
from paywatch.settings import ElasticsearchSettings
from paywatch.store import latest_alerts, summarise_incidents

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

# Every dataset paywatch stores, one data stream each.
DATASETS = (
    "paywatch.payment",
    "paywatch.heartbeat",
    "paywatch.app",
    "paywatch.finding",
    "paywatch.alert",
    "paywatch.action",
)


def data_stream(dataset: str, namespace: str = "default") -> str:
    """ECS data stream naming: logs-<dataset>-<namespace>."""
    return f"logs-{dataset}-{namespace}"


def client(settings: ElasticsearchSettings) -> Elasticsearch:
    from elasticsearch import Elasticsearch

    api_key = read_secret(settings.api_key_env, settings.api_key_file)
    return Elasticsearch(
        settings.url,
        api_key=api_key,
        request_timeout=settings.request_timeout_s,
        retry_on_timeout=True,
        max_retries=3,
    )


class ElasticHistory:
    """The HistoryReader over Elasticsearch data streams (the Kafka + Elasticsearch backend)."""

    def __init__(self, es: Elasticsearch, namespace: str = "default") -> None:
        self._es = es
        self._ns = namespace

    def _search(self, dataset: str, query: dict, sort: str = "asc", size: int = 10_000, **extra) -> list[dict]:
        resp = self._es.search(
            index=data_stream(dataset, self._ns),
            query=query,
            sort=[{"@timestamp": sort}, {"event.id": "asc"}],
            size=size,
            ignore_unavailable=True,
            **extra,
        )
        return [hit["_source"] for hit in resp["hits"]["hits"]]

    def order_timeline(self, order_id: str) -> list[dict]:
        return self._search("paywatch.*", {"term": {"payment.order_id": order_id}})

    def alerts(self, status: str | None = None, limit: int = 100) -> list[dict]:
        latest = self._search(
            "paywatch.alert", {"match_all": {}}, sort="desc", size=limit * 2, collapse={"field": "alert.fingerprint"}
        )
        return latest_alerts(reversed(latest), status, limit)

    def incidents(self, limit: int = 100) -> list[dict]:
        docs = self._search("paywatch.finding", {"terms": {"finding.kind": sorted(INCIDENT_KINDS)}})
        return summarise_incidents(docs)[:limit]
