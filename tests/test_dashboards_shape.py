"""paywatch's Kibana saved objects and Grafana dashboards have the shape of what Kibana 8.x and
Grafana export themselves (tests/fixtures/exports, copied from the public Kibana and Grafana
repositories; see the README there). Neither server runs here: these are the structural
properties an import depends on, checked against an independent source, not our own builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paywatch.dashboards import grafana, kibana
from paywatch.dashboards import queries as q

EXPORTS = Path(__file__).resolve().parent / "fixtures" / "exports"
# Set by the server on save, never part of what one imports.
SERVER_ASSIGNED = {"updated_at", "created_at", "created_by", "updated_by", "version", "namespaces", "managed"}
# Kibana < 8.8 wrote migrationVersion; 8.8+ writes typeMigrationVersion (what we ship).
LEGACY = {"migrationVersion"}


def _real_kibana() -> dict[str, dict[str, Any]]:
    objects = [json.loads(line) for line in (EXPORTS / "kibana_8x_saved_objects.ndjson").read_text().splitlines()]
    return {o["type"]: o for o in objects}


REAL_KIBANA = _real_kibana()
OURS = kibana.saved_objects()
REAL_GRAFANA = json.loads((EXPORTS / "grafana_elasticsearch_simple.json").read_text())


def _missing(ours: dict[str, Any], theirs: dict[str, Any], ignore: set[str] = frozenset()) -> set[str]:
    """Keys the real export has that ours lacks, or holds as a different JSON type."""
    return {
        k
        for k in set(theirs) - ignore
        if k not in ours or (type(ours[k]) is not type(theirs[k]) and ours[k] is not None)
    }


def _assert_tiled(grids: list[dict[str, int]], columns: int) -> None:
    """Every panel inside the grid's columns, none overlapping another."""
    cells: set[tuple[int, int]] = set()
    for g in grids:
        assert g["x"] >= 0 and g["x"] + g["w"] <= columns, g
        covered = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not covered & cells, f"{g} overlaps another panel"
        cells |= covered


def test_every_shipped_type_has_a_real_export_to_compare_with() -> None:
    assert {o["type"] for o in OURS} <= set(REAL_KIBANA)


@pytest.mark.parametrize("obj", OURS, ids=lambda o: f"{o['type']}/{o['id']}")
def test_saved_object_top_level_matches_a_real_export(obj: dict[str, Any]) -> None:
    real = REAL_KIBANA[obj["type"]]
    assert _missing(obj, real, SERVER_ASSIGNED | LEGACY) == set()
    # Without these Kibana 8.0-8.7 runs every migration since 7.x on the object.
    assert obj["coreMigrationVersion"] == kibana.CORE_MIGRATION_VERSION
    assert obj["typeMigrationVersion"], obj["id"]
    assert "migrationVersion" not in obj
    assert (
        _missing(obj["attributes"], real["attributes"], {"version", "hits", "fieldFormatMap", "runtimeFieldMap"})
        == set()
    )


@pytest.mark.parametrize("obj", [o for o in OURS if o["type"] == "lens"], ids=lambda o: o["id"])
def test_lens_state_has_the_shape_every_8x_migration_reads(obj: dict[str, Any]) -> None:
    real = REAL_KIBANA["lens"]["attributes"]["state"]
    state = obj["attributes"]["state"]
    assert _missing(state, real) == set()
    sources = state["datasourceStates"]
    assert set(real["datasourceStates"]) <= set(sources)
    # 8.0-8.5 read, and the 7.x migrations dereference, `indexpattern`; 8.6+ reads `formBased`.
    assert sources["indexpattern"]["layers"] == sources["formBased"]["layers"]
    (real_layer,) = real["datasourceStates"]["formBased"]["layers"].values()
    for layer in sources["formBased"]["layers"].values():
        assert _missing(layer, real_layer, {"sampling"}) == set()
        assert layer["columnOrder"] == list(layer["columns"])
        real_columns = list(real_layer["columns"].values())
        for column in layer["columns"].values():
            no_field = {"sourceField"} if column["operationType"] == "filters" else set()  # as in Kibana
            assert _missing(column, real_columns[0], {"params"} | no_field) == set()
    layer_refs = {r["name"] for r in obj["references"]}
    assert {f"indexpattern-datasource-layer-{lid}" for lid in sources["formBased"]["layers"]} <= layer_refs
    if obj["attributes"]["visualizationType"] == "lnsXY":
        (real_xy,) = real["visualization"]["layers"]
        for xy in state["visualization"]["layers"]:
            assert _missing(xy, real_xy, {"colorMapping", "position", "showGridlines"}) == set()


@pytest.mark.parametrize("obj", [o for o in OURS if o["type"] == "dashboard"], ids=lambda o: o["id"])
def test_kibana_dashboard_panels_match_a_real_export(obj: dict[str, Any]) -> None:
    real = REAL_KIBANA["dashboard"]
    (real_panel, *_) = json.loads(real["attributes"]["panelsJSON"])
    real_options = set(json.loads(real["attributes"]["optionsJSON"]))
    assert set(json.loads(obj["attributes"]["optionsJSON"])) == real_options
    panels = json.loads(obj["attributes"]["panelsJSON"])
    references = {r["name"] for r in obj["references"]}
    for panel in panels:
        assert _missing(panel, real_panel) == set()
        assert set(panel["gridData"]) == set(real_panel["gridData"])
        assert f"{panel['panelIndex']}:{panel['panelRefName']}" in references
    _assert_tiled([p["gridData"] for p in panels], kibana.KIBANA_GRID_COLUMNS)


def test_grafana_dashboards_have_the_shape_of_a_real_export() -> None:
    (real_ts, real_table) = REAL_GRAFANA["panels"]
    real_target = real_ts["targets"][0]
    for uid, model in grafana.build_all().items():
        ignore = {"style", "weekStart", "liveNow", "version", "refresh"}  # optional or deprecated in Grafana 11
        assert _missing(model, REAL_GRAFANA, ignore) == set(), uid
        annotations = model["annotations"]["list"]
        assert isinstance(annotations, list) and any(a.get("builtIn") == 1 for a in annotations), uid
        assert model["timezone"] == "utc"  # every time on the dashboards reads as UTC
        _assert_tiled([p["gridPos"] for p in model["panels"]], grafana.GRID_COLUMNS)
        for panel in model["panels"]:
            real = real_table if panel["type"] == "table" else real_ts
            assert _missing(panel, real, {"links", "options", "pluginVersion", "transformations"}) == set(), (
                uid,
                panel["title"],
            )
            assert set(panel["gridPos"]) == set(real["gridPos"])
            assert panel["fieldConfig"]["defaults"].get("unit"), (uid, panel["title"], "no unit")
            for target in panel["targets"]:
                if target["datasource"]["type"] == "elasticsearch":
                    assert _missing(target, real_target, {"dsType", "target"}) == set()


def _panel(uid: str, key: str) -> dict[str, Any]:
    dashboard = next(d for d in q.DASHBOARDS if d.uid == uid)
    index = next(i for i, p in enumerate(dashboard.panels) if p.key == key)
    return grafana.build(dashboard)["panels"][index]


def test_counts_carry_no_percent_sign_and_times_a_date_unit() -> None:
    for dashboard in q.DASHBOARDS:
        for panel, built in zip(dashboard.panels, grafana.build(dashboard)["panels"], strict=True):
            if isinstance(panel, q.Panel) and all(m.type == "count" for m in panel.metrics):
                assert "percent" not in built["fieldConfig"]["defaults"]["unit"], panel.title
    # Shares of attempt outcomes: counts stacked to 100 %, not counts labelled as percentages.
    outcomes = _panel("paywatch-payments", "outcomes")
    assert outcomes["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "percent"
    grid = _panel("paywatch-heartbeats", "heartbeat_grid")
    (last_seen,) = [o for o in grid["fieldConfig"]["overrides"] if o["matcher"]["options"] == "Max @timestamp"]
    assert last_seen["properties"] == [{"id": "unit", "value": grafana.DATE_UNIT}]


def test_self_health_prometheus_panels_have_a_provisioned_data_source() -> None:
    import yaml

    from paywatch.dashboards.export import export_files

    sources = yaml.safe_load(export_files()["provisioning/datasources/paywatch.yaml"])["datasources"]
    uids = {s["uid"]: s for s in sources}
    for model in grafana.build_all().values():
        for panel in model["panels"]:
            if panel["datasource"]["type"] == "prometheus":
                assert uids[panel["datasource"]["uid"]]["type"] == "prometheus"
    compose = yaml.safe_load((EXPORTS.parents[2] / "docker-compose.yml").read_text())
    assert "name" not in compose  # docker-compose 1.x rejects a top-level name
    prometheus = compose["services"]["prometheus"]
    assert prometheus["ports"] == ["127.0.0.1:19090:9090"]
    assert uids[grafana.PROMETHEUS_DATASOURCE.uid]["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load((EXPORTS.parents[2] / "deploy/local/compose/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    port = yaml.safe_load((EXPORTS.parents[2] / "deploy/local/compose/paywatch.yaml").read_text())["collector"]
    assert f"collect:{port['metrics_port']}" in targets
    kafka_check = " ".join(compose["services"]["kafka"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions" not in kafka_check  # no second JVM every interval
