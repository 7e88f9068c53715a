"""Run each Grafana panel's query the way Grafana's Elasticsearch data source would, and say
which panels would show "No data".

The request body is rebuilt from the dashboard JSON alone (query string with the template
variables filled in, bucket aggregations nested in order, metrics at the innermost level),
following Grafana's Elasticsearch query builder, so what is checked is what was exported.
Used by the tests against real Elasticsearch and by `paywatch dashboards check`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

ALL = "$__all"
_DAY = 86400
_AUTO_STEPS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, _DAY, 7 * _DAY, 30 * _DAY, 365 * _DAY)


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    target: dict[str, Any]
    body: dict[str, Any]


def interpolate(query: str, variables: Mapping[str, str | list[str]], all_values: Mapping[str, str]) -> str:
    """Fill `$var` and `${var:lucene}` as Grafana does for Lucene: one value as is, several as
    (a OR b), "All" as the variable's allValue."""
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        if value == ALL or value == [ALL]:
            text = all_values.get(name, "*")
        elif isinstance(value, list):
            text = value[0] if len(value) == 1 else "(" + " OR ".join(f'"{v}"' for v in value) + ")"
        else:
            text = value
        query = query.replace("${" + name + ":lucene}", text).replace("${" + name + "}", text)
        query = query.replace("$" + name, text)
    return query


def auto_interval(start: datetime, end: datetime, max_points: int = 100) -> str:
    """Grafana's `auto` date-histogram interval: about max_points buckets, on a round step."""
    wanted = (end - start).total_seconds() / max_points
    step = next((s for s in _AUTO_STEPS_S if s >= wanted), _AUTO_STEPS_S[-1])
    return f"{step}s"


def _metric_agg(metric: dict[str, Any]) -> dict[str, Any] | None:
    kind = metric["type"]
    if kind in ("count", "raw_data"):
        return None
    if kind == "percentiles":
        percents = [float(p) for p in metric["settings"]["percents"]]
        return {"percentiles": {"field": metric["field"], "percents": percents}}
    if kind in ("avg", "max", "min", "sum", "cardinality"):
        return {kind: {"field": metric["field"]}}
    raise ValueError(f"metric {kind!r} is not supported by the checker")


def _bucket_agg(bucket: dict[str, Any], start: datetime, end: datetime, query_vars: Any) -> dict[str, Any]:
    kind, settings = bucket["type"], bucket.get("settings", {})
    if kind == "terms":
        return {
            "terms": {
                "field": bucket["field"],
                "size": int(settings.get("size", 10)),
                "order": {settings.get("orderBy", "_count"): settings.get("order", "desc")},
                "min_doc_count": int(settings.get("min_doc_count", 1)),
            }
        }
    if kind == "date_histogram":
        interval = settings.get("interval", "auto")
        return {
            "date_histogram": {
                "field": bucket["field"],
                "fixed_interval": auto_interval(start, end) if interval == "auto" else interval,
                "min_doc_count": int(settings.get("min_doc_count", 0)),
                "extended_bounds": {"min": int(start.timestamp() * 1000), "max": int(end.timestamp() * 1000)},
                "format": "epoch_millis",
            }
        }
    if kind == "filters":
        return {
            "filters": {
                "filters": {
                    f["label"]: {"query_string": {"query": query_vars(f["query"]), "analyze_wildcard": True}}
                    for f in settings["filters"]
                }
            }
        }
    raise ValueError(f"bucket aggregation {kind!r} is not supported by the checker")


def search_body(
    target: dict[str, Any],
    start: datetime,
    end: datetime,
    variables: Mapping[str, str | list[str]],
    all_values: Mapping[str, str],
) -> dict[str, Any]:
    """The body Grafana's Elasticsearch data source sends for one target."""

    def fill(text: str) -> str:
        return interpolate(text, variables, all_values)

    time_field = target.get("timeField", "@timestamp")
    query = {
        "bool": {
            "filter": [
                {"range": {time_field: {"gte": start.isoformat(), "lte": end.isoformat()}}},
                {"query_string": {"query": fill(target.get("query") or "*"), "analyze_wildcard": True}},
            ]
        }
    }
    raw = next((m for m in target["metrics"] if m["type"] == "raw_data"), None)
    if raw is not None:  # documents, newest first, no aggregations
        size = int(raw.get("settings", {}).get("size", 500))
        return {"size": size, "query": query, "sort": [{time_field: {"order": "desc"}}, {"_doc": {"order": "desc"}}]}
    aggs: dict[str, Any] = {m["id"]: agg for m in target["metrics"] if (agg := _metric_agg(m)) is not None}
    for bucket in reversed(target.get("bucketAggs", [])):
        agg = _bucket_agg(bucket, start, end, fill)
        if aggs:
            agg["aggs"] = aggs
        aggs = {bucket["id"]: agg}
    return {"size": 0, "query": query, "aggs": aggs}


def panel_queries(
    dashboard: dict[str, Any],
    start: datetime,
    end: datetime,
    variables: Mapping[str, str | list[str]],
) -> Iterator[PanelQuery]:
    """Every Elasticsearch target of every panel, as the search request Grafana would send."""
    all_values = {v["name"]: v.get("allValue") or "*" for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        if panel.get("datasource", {}).get("type") != "elasticsearch":  # Prometheus panels
            continue
        for target in panel["targets"]:
            yield PanelQuery(
                dashboard["title"], panel["title"], target, search_body(target, start, end, variables, all_values)
            )


def rows(response: Mapping[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a response into the rows Grafana would show: for raw documents one per hit
    (fields flattened to dotted names); for aggregations one per leaf bucket, with the bucket
    keys and each metric's value (None when Elasticsearch had nothing)."""
    if any(m["type"] == "raw_data" for m in target["metrics"]):
        return [dict(flatten(hit["_source"]), _count=1) for hit in response["hits"]["hits"]]
    buckets = target.get("bucketAggs", [])

    def leaf(node: Mapping[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
        row = dict(keys, _count=node.get("doc_count", 0))
        for m in target["metrics"]:
            value = node.get(m["id"], {})
            if m["type"] == "count":
                row[m["id"]] = node.get("doc_count", 0)
            elif m["type"] == "percentiles":
                row[m["id"]] = {k: v for k, v in value.get("values", {}).items() if v is not None} or None
            else:
                row[m["id"]] = value.get("value")
        return row

    def walk(node: Mapping[str, Any], depth: int, keys: dict[str, Any]) -> list[dict[str, Any]]:
        if depth == len(buckets):
            return [leaf(node, keys)]
        bucket = buckets[depth]
        found = node.get(bucket["id"], {}).get("buckets", [])  # no indices: no aggregations
        items = found.items() if isinstance(found, dict) else ((b["key"], b) for b in found)
        out: list[dict[str, Any]] = []
        for key, child in items:
            out += walk(child, depth + 1, {**keys, bucket.get("field") or bucket["type"]: key})
        return out

    return walk(response.get("aggregations", {}), 0, {})


def flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested objects as dotted field names, as Grafana shows raw documents."""
    for key, value in doc.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def has_data(row: Mapping[str, Any], target: dict[str, Any]) -> bool:
    """A row Grafana would draw: documents behind it and every visible metric has a value."""
    metrics = [m for m in target["metrics"] if not m.get("hide") and m["type"] != "raw_data"]
    return row["_count"] > 0 and all(row[m["id"]] is not None for m in metrics)


def panel_rows(
    es: Elasticsearch,
    index: str,
    dashboards: Iterable[dict[str, Any]],
    start: datetime,
    end: datetime,
    variables: Mapping[str, str | list[str]],
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(dashboard, panel) title → the rows with data each panel would draw over [start, end]."""
    out = {}
    for dashboard in dashboards:
        for pq in panel_queries(dashboard, start, end, variables):
            response = es.search(index=index, **pq.body)
            out[pq.dashboard, pq.panel] = [r for r in rows(response, pq.target) if has_data(r, pq.target)]
    return out
