"""Elasticsearch wiring shared by every stage: the client, and where each dataset is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywatch.config import ElasticsearchSettings, read_secret

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
