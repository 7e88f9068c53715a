"""Grafana dashboards built from the panel specs with the official grafana-foundation-sdk.

Each environment (data stream namespace) is one Elasticsearch data source (uid
`paywatch-es-<namespace>`, index `logs-paywatch.*-<namespace>`), and the `environment`
variable picks it; each panel's query names its dataset. The self-health dashboard
also has panels on a Prometheus data source (uid `paywatch-prometheus`) for what only
paywatch's own metrics know (consumer lag, dead letters).
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import barchart, bargauge, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as gdb
from grafana_foundation_sdk.builders import elasticsearch as ges
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import (
    AnnotationQuery,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    GridPos,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
)

from paywatch.dashboards import queries as q
from paywatch.kibana import KibanaSettings, discover_url

ES_DATASOURCE = DataSourceRef(type_val="elasticsearch", uid="${environment}")
PROMETHEUS_DATASOURCE = DataSourceRef(type_val="prometheus", uid="paywatch-prometheus")
DATASOURCE_NAME_PREFIX = "paywatch · "
TAG = "paywatch"
DEFAULT_KIBANA_URL: str = KibanaSettings.model_fields["url"].default
DEFAULT_ENVIRONMENTS = ("default",)
GRID_COLUMNS, PANEL_HEIGHT = 24, 8
DATE_UNIT = "dateTimeAsIso"
# Grafana's own "Annotations & Alerts" entry, as every exported dashboard carries it.
BUILT_IN_ANNOTATIONS = AnnotationQuery(
    name="Annotations & Alerts",
    datasource=DataSourceRef(type_val="grafana", uid="-- Grafana --"),
    enable=True,
    hide=True,
    icon_color="rgba(0, 211, 255, 1)",
    type_val="dashboard",
    built_in=1,
)

_VIZ = {
    "timeseries": timeseries.Panel,
    "table": table.Panel,
    "bargauge": bargauge.Panel,
    "barchart": barchart.Panel,
    "statetimeline": statetimeline.Panel,
}


def _metric(m: q.Metric) -> Any:
    if m.type == "count":
        return ges.Count().id(m.id)
    if m.type == "raw_data":
        return ges.RawData().id(m.id).settings(ges.ElasticsearchRawDataSettings().size(str(m.size)))
    if m.type == "percentiles":
        settings = ges.ElasticsearchPercentilesSettings().percents(list(m.percents))
        return ges.Percentiles().id(m.id).field(m.field or "").settings(settings)
    if m.type == "cardinality":
        return ges.UniqueCount().id(m.id).field(m.field or "")
    return ges.Max().id(m.id).field(m.field or "")


def _bucket(b: q.Bucket) -> Any:
    if b.type == "terms":
        settings = ges.ElasticsearchTermsSettings().size(str(b.size)).order("desc").order_by("_count")
        return ges.Terms().id(b.id).field(b.field or "").settings(settings.min_doc_count("1"))
    if b.type == "date_histogram":
        settings = ges.ElasticsearchDateHistogramSettings().interval(b.interval).min_doc_count("0")
        return ges.DateHistogram().id(b.id).field(b.field or "@timestamp").settings(settings)
    filters = [ges.Filter().label(label).query(query) for label, query in b.filters]
    return ges.Filters().id(b.id).settings(ges.ElasticsearchFiltersSettings().filters(filters))


def _transformations(panel: q.Panel) -> list[DataTransformerConfig]:
    """Raw-document panels: keep the declared columns, then newest-per-row or one row per series."""
    if not panel.columns:
        return []
    out = [
        DataTransformerConfig(
            id_val="organize",
            options={
                "includeByName": {c: True for c in panel.columns},
                "indexByName": {c: i for i, c in enumerate(panel.columns)},
            },
        )
    ]
    if panel.latest_by:
        # Raw data comes newest first, so the first value of each group is the latest.
        fields: dict[str, Any] = {panel.latest_by: {"operation": "groupby", "aggregations": []}}
        fields |= {
            c: {"operation": "aggregate", "aggregations": ["first"]} for c in panel.columns if c != panel.latest_by
        }
        out.append(DataTransformerConfig(id_val="groupBy", options={"fields": fields}))
    if panel.partition_by:
        out.append(
            DataTransformerConfig(
                id_val="partitionByValues", options={"fields": [panel.partition_by], "keepFields": False}
            )
        )
    return out


def _discover(data_view: str, lucene: str) -> str:
    """A Kibana Discover link over the dashboard's time range. Grafana fills in `${...}`; the
    rest is URL-encoded so that spaces, quotes and colons survive Grafana's link handling."""
    return discover_url(
        "${kibana_url}", data_view, lucene, "${__from:date:iso}", "${__to:date:iso}", "lucene", safe="${}:_-.*,"
    )


def data_view_id(dataset: str) -> str:
    """Kibana data view id: `logs-<dataset>`, and `logs-paywatch` for the view over every dataset
    (the id the alerts stage's evidence links open)."""
    return "logs-paywatch" if dataset == q.ALL else f"logs-{dataset}"


def _grafana_lucene(panel: q.Panel) -> str:
    """Multi-value variables are interpolated in Lucene form, e.g. (alipay OR wechat)."""
    query = panel.lucene()
    for var in panel.variables:
        query = query.replace(f"${var}", "${" + var + ":lucene}")
    return query


def es_panel(panel: q.Panel) -> Any:
    target = (
        ges.Dataquery()
        .ref_id("A")
        .datasource(ES_DATASOURCE)
        .query(_grafana_lucene(panel))
        .time_field("@timestamp")
        .metrics([_metric(m) for m in panel.metrics])
        .bucket_aggs([_bucket(b) for b in panel.buckets])
    )
    built = (
        _VIZ[panel.viz]()
        .title(panel.title)
        .description(panel.question)
        .datasource(ES_DATASOURCE)
        .with_target(target)
        .unit(panel.unit)
    )
    for transformation in _transformations(panel):
        built = built.with_transformation(transformation)
    if panel.viz == "statetimeline":
        colors = {v: ValueMappingResult(text=v, color=c) for v, c in q.LEVEL_COLORS.items()}
        built = built.mappings([ValueMap(options=colors)]).merge_values(True)
    if panel.repeat:
        built = built.repeat(panel.repeat).repeat_direction("h").max_per_row(3)
    if panel.percent:
        built = built.stacking(StackingConfig().mode(StackingMode.PERCENT)).fill_opacity(40)
    discover = _discover(data_view_id(panel.dataset), _grafana_lucene(panel))
    built = built.links([gdb.DashboardLink("Raw events in Kibana Discover").url(discover).target_blank(True)])
    for name in _date_fields(panel):
        built = built.override_by_name(name, [DynamicConfigValue(id_val="unit", value=DATE_UNIT)])
    if panel.row_field:
        # Everything paywatch stored about the clicked order (or service): events, findings, actions.
        name = panel.row_field.rsplit(".", 1)[-1]
        row_query = f'{panel.row_field}:"${{__value.raw}}"'
        row_link = gdb.DashboardLink(f"Everything about this {name} in Kibana").url(
            _discover(data_view_id(q.ALL), row_query)
        )
        built = built.override_by_name(panel.row_field, [_links_property(row_link.target_blank(True))])
    return built


def _date_fields(panel: q.Panel) -> list[str]:
    """Columns holding a time: shown as ISO 8601 dates, never as epoch milliseconds. Grafana
    names a metric column "<Metric> <field>" (e.g. "Max @timestamp")."""
    names = [c for c in panel.columns if c == "@timestamp"]
    names += [f"{m.type.capitalize()} {m.field}" for m in panel.metrics if m.type == "max" and m.field == "@timestamp"]
    return names


def layout(widths: list[int], height: int = PANEL_HEIGHT) -> list[GridPos]:
    """Left to right on Grafana's 24-column grid, starting a new row when a panel would overflow."""
    out, x, y = [], 0, 0
    for w in widths:
        if x + w > GRID_COLUMNS:
            x, y = 0, y + height
        out.append(GridPos(h=height, w=w, x=x, y=y))
        x += w
    return out


def _links_property(link: gdb.DashboardLink) -> Any:
    return DynamicConfigValue(id_val="links", value=[link.build()])


def prometheus_panel(panel: q.PromPanel) -> Any:
    target = (
        gprom.Dataquery()
        .ref_id("A")
        .datasource(PROMETHEUS_DATASOURCE)
        .expr(panel.expr)
        .legend_format(panel.legend)
        .range()
    )
    return (
        timeseries.Panel()
        .title(panel.title)
        .description(panel.question)
        .datasource(PROMETHEUS_DATASOURCE)
        .with_target(target)
        .unit(panel.unit)
    )


def _terms_variable(name: str, label: str, dataset: str) -> Any:
    field = q.VARIABLE_FIELDS[name]
    query = json.dumps({"find": "terms", "field": field, "query": f'event.dataset:"{dataset}"'})
    return (
        gdb.QueryVariable(name)
        .label(label)
        .datasource(ES_DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value("*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _environment_variable(environments: tuple[str, ...]) -> Any:
    """Environments are data stream namespaces, each its own data source (see `datasource`)."""
    first = datasource_uid(environments[0])
    return (
        gdb.DatasourceVariable("environment")
        .label("Environment")
        .type("elasticsearch")
        .regex(f"/^{DATASOURCE_NAME_PREFIX}/")
        .current(VariableOption(selected=True, text=DATASOURCE_NAME_PREFIX + environments[0], value=first))
    )


def build(
    dashboard: q.Dashboard,
    kibana_url: str = DEFAULT_KIBANA_URL,
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS,
) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (what the HTTP API and file provisioning take)."""
    built = (
        gdb.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags([TAG])
        .time("now-1h", "now")
        .timezone("utc")
        .timepicker(gdb.TimePicker().refresh_intervals(["10s", "30s", "1m", "5m", "15m", "1h"]))
        .refresh("30s")
        .editable()
        .with_variable(_environment_variable(environments))
        .with_variable(_terms_variable("channel", "Channel", q.PAYMENT))
        .with_variable(_terms_variable("merchant", "Merchant", q.PAYMENT))
        .with_variable(gdb.ConstantVariable("kibana_url").value(kibana_url))
        .link(
            gdb.DashboardLink("paywatch dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    positions = layout([p.width for p in dashboard.panels])
    for number, (panel, position) in enumerate(zip(dashboard.panels, positions, strict=True), 1):
        # fixed ids: links and repeats name panels by id
        built = built.with_panel(
            (prometheus_panel(panel) if isinstance(panel, q.PromPanel) else es_panel(panel))
            .id(number)
            .grid_pos(position)
        )
    model = built.build()
    model.annotations.list_val = [BUILT_IN_ANNOTATIONS]
    return json.loads(json.dumps(model, cls=JSONEncoder))


def build_all(
    kibana_url: str = DEFAULT_KIBANA_URL, environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
) -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, for every paywatch dashboard."""
    return {d.uid: build(d, kibana_url, environments) for d in q.DASHBOARDS}


def datasource_uid(namespace: str) -> str:
    return f"paywatch-es-{namespace}"


def datasource_index(namespace: str) -> str:
    return f"logs-paywatch.*-{namespace}"


def datasource(es_url: str, namespace: str) -> dict[str, Any]:
    """The Elasticsearch data source of one environment (Grafana's data source API body)."""
    return {
        "uid": datasource_uid(namespace),
        "name": DATASOURCE_NAME_PREFIX + namespace,
        "type": "elasticsearch",
        "access": "proxy",
        "url": es_url,
        "jsonData": {"index": datasource_index(namespace), "timeField": "@timestamp", "logMessageField": "message"},
    }


def prometheus_datasource(url: str) -> dict[str, Any]:
    """The Prometheus data source of the self-health panels (one for every environment)."""
    return {
        "uid": PROMETHEUS_DATASOURCE.uid,
        "name": "paywatch · prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
    }
