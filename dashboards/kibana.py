"""Kibana saved objects (NDJSON for the saved objects import API): a data view per dataset,
saved searches for the questions an incident raises, and dashboards mirroring the Grafana
ones panel for panel (Lens for aggregated panels, saved searches for document tables).

No runtime fields: they need painless, and every query shipped here is one the tests run
against real Elasticsearch; the Lens panels use the same Lucene filters as Grafana instead.

Object ids are fixed, so importing with `overwrite=true` updates in place (idempotent),
and Grafana's links to Discover can name the data views.
"""

from __future__ import annotations

import json
from typing import Any

from paywatch.dashboards import queries as q
from paywatch.dashboards.grafana import GRID_COLUMNS, data_view_id, layout
from paywatch.elastic import DATASETS

LAYER = "layer1"
SEARCH_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
KIBANA_GRID_COLUMNS = 48
# The versions a Kibana 8.x export stamps on each type (see tests/fixtures/exports). Without
# them Kibana 8.0-8.7 runs every migration since 7.x on the objects; with them Kibana only
# migrates forward from the shape written here.
CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSIONS = {"index-pattern": "8.0.0", "search": "8.0.0", "lens": "8.9.0", "dashboard": "8.7.0"}


def data_view(dataset: str) -> dict[str, Any]:
    """A data view over every namespace of one dataset (or of all of them for `paywatch.*`)."""
    pattern = "logs-paywatch.*-*" if dataset == q.ALL else f"logs-{dataset}-*"
    attributes: dict[str, Any] = {
        "title": pattern,
        "name": "paywatch · all datasets" if dataset == q.ALL else f"paywatch · {dataset.removeprefix('paywatch.')}",
        "timeFieldName": "@timestamp",
        "allowNoIndex": True,
    }
    return {"type": "index-pattern", "id": data_view_id(dataset), "attributes": attributes, "references": []}


# (id, title, data view dataset, Lucene query, columns, what it is for)
SEARCHES: tuple[tuple[str, str, str, str, tuple[str, ...], str], ...] = (
    (
        "paywatch-search-incident-orders",
        "paywatch · orders of one incident",
        q.ALL,
        '_exists_:payment.order_id AND (event.dataset:"paywatch.payment" OR event.dataset:"paywatch.action" '
        "OR finding.kind:(paid_but_pending OR duplicate_charge))",
        (
            "event.dataset",
            "event.action",
            "payment.order_id",
            "payment.attempt_id",
            "payment.channel",
            "event.outcome",
            "payment.status",
            "finding.kind",
            "finding.state",
        ),
        "Every attempt, callback, query, finding and action of the orders an incident touched. Set the "
        "time range to the incident and add payment.channel:<channel>, or payment.order_id:<id> for one order.",
    ),
    (
        "paywatch-search-stuck-orders",
        "paywatch · paid-but-pending findings",
        q.FINDING,
        "finding.kind:(paid_but_pending OR paid_but_pending_incident)",
        ("finding.kind", "finding.state", "payment.order_id", "payment.channel", "finding.summary"),
        "Orders the channel charged while the business still shows them pending, and their resolution.",
    ),
    (
        "paywatch-search-duplicate-charges",
        "paywatch · duplicate charges and refund candidates",
        q.ALL,
        "finding.kind:(duplicate_charge OR duplicate_charge_incident) OR event.action:refund_candidate",
        (
            "event.dataset",
            "finding.kind",
            "event.action",
            "payment.order_id",
            "payment.attempt_id",
            "payment.channel",
            "payment.merchant_id",
        ),
        "Orders charged more than once, and the extra charges proposed for refund.",
    ),
    (
        "paywatch-search-failed-attempts",
        "paywatch · failed attempts",
        q.PAYMENT,
        "event.outcome:failure",
        ("payment.channel", "payment.error_code", "payment.error_category", "payment.order_id", "payment.merchant_id"),
        "Failed attempts with their error code and whose failure it is (customer or channel).",
    ),
    (
        "paywatch-search-compensation-audit",
        "paywatch · compensation audit",
        q.ACTION,
        'event.dataset:"paywatch.action"',
        (
            "event.action",
            "event.outcome",
            "payment.order_id",
            "payment.channel",
            "action.from_status",
            "action.to_status",
            "action.actor",
            "action.reason",
        ),
        "Every compensating query, repair and refund candidate: who changed what, on which evidence.",
    ),
    (
        "paywatch-search-incidents",
        "paywatch · incident findings",
        q.FINDING,
        "finding.kind:(paid_but_pending_incident OR duplicate_charge_incident OR channel_health OR "
        "error_code_spike OR service_down OR heartbeat_missing)",
        (
            "finding.kind",
            "finding.state",
            "finding.level",
            "finding.severity",
            "payment.channel",
            "service.name",
            "finding.summary",
        ),
        "Incident-level findings, the ones that page.",
    ),
    (
        "paywatch-search-unhealthy-heartbeats",
        "paywatch · heartbeats not up",
        q.HEARTBEAT,
        "NOT heartbeat.status:up",
        ("service.name", "service.instance.id", "heartbeat.status", "heartbeat.seq"),
        "Services reporting themselves degraded or stopping.",
    ),
    (
        "paywatch-search-alerts",
        "paywatch · alert changes",
        q.ALERT,
        "_exists_:alert.status",
        ("alert.name", "alert.status", "alert.severity", "payment.channel", "event.action"),
        "Alerts opened, fired, re-sent and resolved, with their deliveries.",
    ),
)


def saved_search(
    sid: str, title: str, dataset: str, query: str, columns: tuple[str, ...], description: str
) -> dict[str, Any]:
    source = {"query": {"query": query, "language": "lucene"}, "filter": [], "indexRefName": SEARCH_REF}
    return {
        "type": "search",
        "id": sid,
        "attributes": {
            "title": title,
            "description": description,
            "columns": list(columns),
            "sort": [["@timestamp", "desc"]],
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
        },
        "references": [{"name": SEARCH_REF, "type": "index-pattern", "id": data_view_id(dataset)}],
    }


def search_source(search: dict[str, Any]) -> dict[str, Any]:
    return json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def _metric_columns(m: q.Metric) -> dict[str, dict[str, Any]]:
    """Lens columns for one Grafana metric (one per percentile)."""
    base = {"isBucketed": False, "scale": "ratio", "dataType": "number"}
    col = f"m{m.id}"
    if m.type == "count":
        return {col: dict(base, label="Count", operationType="count", sourceField="___records___")}
    if m.type == "percentiles":
        return {
            f"{col}p{p}": dict(
                base, label=f"p{p}", operationType="percentile", sourceField=m.field, params={"percentile": int(p)}
            )
            for p in m.percents
        }
    operation = {"max": "max", "cardinality": "unique_count"}[m.type]
    return {col: dict(base, label=f"{operation} of {m.field}", operationType=operation, sourceField=m.field)}


def _bucket_column(b: q.Bucket, order_by: str) -> dict[str, Any]:
    base = {"isBucketed": True, "label": b.field or "filters"}
    if b.type == "date_histogram":
        interval = "auto" if b.interval == "auto" else b.interval
        return dict(
            base,
            dataType="date",
            scale="interval",
            operationType="date_histogram",
            sourceField=b.field,
            params={"interval": interval, "includeEmptyRows": True},
        )
    if b.type == "terms":
        params = {
            "size": b.size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": False,
            "missingBucket": False,
        }
        return dict(base, dataType="string", scale="ordinal", operationType="terms", sourceField=b.field, params=params)
    if b.type == "filters":
        filters = [{"label": label, "input": {"query": query, "language": "lucene"}} for label, query in b.filters]
        return dict(base, dataType="string", scale="ordinal", operationType="filters", params={"filters": filters})
    raise ValueError(f"no Lens column for a {b.type} bucket")


def _visualization(
    panel: q.Panel, buckets: dict[str, dict[str, Any]], metrics: list[str]
) -> tuple[str, dict[str, Any]]:
    date = [c for c, col in buckets.items() if col["operationType"] == "date_histogram"]
    split = [c for c, col in buckets.items() if col["operationType"] != "date_histogram"]
    if panel.viz == "table":
        return "lnsDatatable", {
            "layerId": LAYER,
            "layerType": "data",
            "columns": [{"columnId": c} for c in [*buckets, *metrics]],
        }
    series = {"timeseries": "line", "barchart": "bar"}.get(panel.viz, "bar_horizontal")
    if panel.percent:
        series = "area_percentage_stacked"
    x = date[0] if date else split[0]
    rest = [c for c in split if c != x]
    layer: dict[str, Any] = {
        "layerId": LAYER,
        "layerType": "data",
        "seriesType": series,
        "xAccessor": x,
        "accessors": metrics,
    }
    if rest:
        layer["splitAccessor"] = rest[0]
    return "lnsXY", {
        "legend": {"isVisible": True, "position": "right"},
        "valueLabels": "hide",
        "preferredSeriesType": series,
        "layers": [layer],
    }


def lens(panel: q.Panel) -> dict[str, Any]:
    """A Lens visualization computing what the Grafana panel computes, on the dataset's data view."""
    metric_cols: dict[str, dict[str, Any]] = {}
    for m in panel.metrics:
        metric_cols |= _metric_columns(m)
    first_metric = next(iter(metric_cols))
    bucket_cols: dict[str, dict[str, Any]] = {}
    for b in panel.buckets:
        previous = bucket_cols.get(next(reversed(bucket_cols), ""), {})
        if b.type == "terms" and previous.get("operationType") == "terms":
            # Lens breaks down by one column: nested terms become one multi-field terms column.
            previous["params"].setdefault("secondaryFields", []).append(b.field)
            continue
        bucket_cols[f"b{b.id}"] = _bucket_column(b, first_metric)
    columns = bucket_cols | metric_cols
    vis_type, visualization = _visualization(panel, bucket_cols, list(metric_cols))
    layer = {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}
    return {
        "type": "lens",
        "id": f"paywatch-lens-{panel.key}",
        "attributes": {
            "title": panel.title.replace("$channel", "all channels"),  # Kibana has no variables
            "description": panel.question,
            "visualizationType": vis_type,
            "state": {
                # `formBased` is what Kibana >= 8.6 reads. The same layer under `indexpattern` (its
                # name before 8.6) is what 8.0-8.5 read and what the older Lens migrations
                # dereference; `textBased` is present, empty, as in Kibana's own exports.
                "datasourceStates": {
                    "formBased": {"layers": {LAYER: layer}},
                    "indexpattern": {"layers": {LAYER: layer}},
                    "textBased": {"layers": {}},
                },
                "adHocDataViews": {},
                "internalReferences": [],
                "visualization": visualization,
                "query": {"query": panel.lucene(with_variables=False), "language": "lucene"},
                "filters": [],
            },
        },
        "references": [
            {
                "type": "index-pattern",
                "id": data_view_id(panel.dataset),
                "name": f"indexpattern-datasource-layer-{LAYER}",
            }
        ],
    }


def is_table_of_documents(panel: q.Panel) -> bool:
    return any(m.type == "raw_data" for m in panel.metrics)


def panel_object(panel: q.Panel) -> dict[str, Any]:
    """The Kibana object mirroring one Grafana panel: a saved search for document tables, else Lens."""
    if is_table_of_documents(panel):
        return saved_search(
            f"paywatch-panel-{panel.key}",
            panel.title,
            panel.dataset,
            panel.lucene(with_variables=False),
            panel.columns,
            panel.question,
        )
    return lens(panel)


def dashboard(d: q.Dashboard) -> dict[str, Any]:
    panels, references = [], []
    scale = KIBANA_GRID_COLUMNS // GRID_COLUMNS
    positions = layout([p.width for p in d.es_panels], height=15)
    for i, (panel, at) in enumerate(zip(d.es_panels, positions, strict=True)):
        obj = panel_object(panel)
        index = str(i)
        panels.append(
            {
                "version": TYPE_MIGRATION_VERSIONS["dashboard"],
                "type": obj["type"],
                "panelIndex": index,
                "gridData": {"x": at.x * scale, "y": at.y, "w": at.w * scale, "h": at.h, "i": index},
                "embeddableConfig": {},
                "panelRefName": f"panel_{index}",
            }
        )
        # Kibana >= 8 names a panel's reference "<panelIndex>:<panelRefName>"
        references.append({"name": f"{index}:panel_{index}", "type": obj["type"], "id": obj["id"]})
    return {
        "type": "dashboard",
        "id": d.uid,
        "attributes": {
            "title": d.title,
            "description": d.description,
            "panelsJSON": json.dumps(panels),
            "optionsJSON": json.dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "timeRestore": False,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "lucene"}, "filter": []})
            },
        },
        "references": references,
    }


def saved_objects() -> list[dict[str, Any]]:
    """Every paywatch Kibana object, data views first so an import never meets a dangling reference."""
    objects = [data_view(ds) for ds in (*DATASETS, q.ALL)]
    objects += [saved_search(*s) for s in SEARCHES]
    objects += [panel_object(p) for d in q.DASHBOARDS for p in d.es_panels]
    objects += [dashboard(d) for d in q.DASHBOARDS]
    return [_stamped(o) for o in objects]


def _stamped(obj: dict[str, Any]) -> dict[str, Any]:
    return obj | {
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[obj["type"]],
    }


def ndjson() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in saved_objects())


def dangling_references(objects: list[dict[str, Any]]) -> list[str]:
    """References naming an object (type, id) that is not in the set."""
    present = {(o["type"], o["id"]) for o in objects}
    return [
        f"{o['type']}/{o['id']} -> {r['type']}/{r['id']}"
        for o in objects
        for r in o.get("references", [])
        if (r["type"], r["id"]) not in present
    ]
