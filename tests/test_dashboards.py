"""Dashboards as code without servers: generated files up to date, references whole, queries
translated the way Grafana sends them, self-health metric names real, provisioning idempotent
against local stand-ins of Grafana's and Kibana's HTTP APIs (neither can run here)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from paywatch.app.dashboards import dashboards as dashboards_cli
from paywatch.dashboards import check, grafana, kibana
from paywatch.dashboards import queries as q
from paywatch.dashboards.export import export_files
from paywatch.dashboards.provision import ProvisionError, provision
from paywatch.dashboards.settings import DashboardSettings
from paywatch.elastic import DATASETS

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def test_committed_exports_are_up_to_date() -> None:
    for relative, content in export_files().items():
        path = ROOT / "dashboards" / relative
        assert path.exists(), f"{path} missing: run `paywatch dashboards export dashboards`"
        assert path.read_text() == content, f"{path} is stale: run `paywatch dashboards export dashboards`"
    provisioned = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/paywatch.yaml").read_text())
    (source, prometheus) = provisioned["datasources"]
    assert source["uid"] == grafana.datasource_uid("default") and source["type"] == "elasticsearch"
    assert prometheus["uid"] == grafana.PROMETHEUS_DATASOURCE.uid and prometheus["type"] == "prometheus"
    exported = {p.name for p in (ROOT / "dashboards" / "grafana").glob("*.json")}
    assert exported == {f"{d.uid}.json" for d in q.DASHBOARDS}, "a dashboard file no longer generated"


def test_panel_reference_is_up_to_date() -> None:
    from paywatch.dashboards.docs import render

    text = (ROOT / "docs" / "dashboards.md").read_text()
    assert text == render(), "run `paywatch dashboards docs`"
    for d in q.DASHBOARDS:
        for panel in d.panels:
            assert f"| {panel.title} | {panel.question} |" in text


def test_export_command_writes_the_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(dashboards_cli, ["export", str(tmp_path), "--environment", "prod"])
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "grafana" / "paywatch-payments.json").read_text())
    (environment,) = [v for v in model["templating"]["list"] if v["name"] == "environment"]
    assert environment["current"]["value"] == "paywatch-es-prod"
    assert (tmp_path / "kibana" / "paywatch.ndjson").read_text() == kibana.ndjson()


def test_kibana_references_resolve_inside_the_file() -> None:
    objects = [json.loads(line) for line in kibana.ndjson().splitlines()]
    assert kibana.dangling_references(objects) == []
    keys = [(o["type"], o["id"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate saved object"
    views = {o["id"] for o in objects if o["type"] == "index-pattern"}
    assert views == {grafana.data_view_id(ds) for ds in (*DATASETS, q.ALL)}
    for o in objects:
        if o["type"] == "dashboard":
            panels = json.loads(o["attributes"]["panelsJSON"])
            names = {r["name"] for r in o["references"]}
            assert {f"{p['panelIndex']}:{p['panelRefName']}" for p in panels} == names, o["id"]
        if o["type"] == "lens":
            layer = o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"][kibana.LAYER]
            assert set(layer["columnOrder"]) == set(layer["columns"])
            vis = o["attributes"]["state"]["visualization"]
            if o["attributes"]["visualizationType"] == "lnsXY":
                (xy,) = vis["layers"]
                used = {xy["xAccessor"], *xy["accessors"], *([xy["splitAccessor"]] if "splitAccessor" in xy else [])}
            else:
                used = {c["columnId"] for c in vis["columns"]}
            assert used == set(layer["columns"]), o["id"]


def test_alert_evidence_links_open_a_shipped_data_view() -> None:
    """The alerts stage links each alert to Discover on a data view; that view must be in the file."""
    from paywatch.alerts.settings import AlertSettings

    views = {o["id"]: o for o in kibana.saved_objects() if o["type"] == "index-pattern"}
    view = views[AlertSettings().kibana_data_view]["attributes"]
    assert view["title"] == "logs-paywatch.*-*"  # order and event ids of every dataset


def test_every_grafana_panel_is_documented_linked_and_on_a_known_datasource() -> None:
    for uid, model in grafana.build_all().items():
        assert model["tags"] == [grafana.TAG]
        (link,) = model["links"]
        assert link["type"] == "dashboards" and link["tags"] == [grafana.TAG] and link["includeVars"]
        names = {v["name"] for v in model["templating"]["list"]}
        assert {"environment", "channel", "merchant", "kibana_url"} <= names
        for panel in model["panels"]:
            assert panel["description"], (uid, panel["title"])
            assert panel["datasource"]["uid"] in (grafana.ES_DATASOURCE.uid, grafana.PROMETHEUS_DATASOURCE.uid)
            if panel["datasource"]["type"] == "elasticsearch":
                (discover,) = panel["links"]
                assert discover["url"].startswith("${kibana_url}/app/discover#/")
                view = re.search(r"dataViewId:%27([\w.-]+)%27", discover["url"])
                assert view and view.group(1) in {grafana.data_view_id(ds) for ds in (*DATASETS, q.ALL)}


def test_panel_variables_are_the_ones_the_dashboard_defines() -> None:
    for model in grafana.build_all().values():
        names = {v["name"] for v in model["templating"]["list"]}
        for panel in model["panels"]:
            for target in panel["targets"]:
                used = set(re.findall(r"\$\{?(\w+)", target.get("query", "") + target.get("expr", "")))
                assert used <= names, (panel["title"], used - names)


def test_interpolation_follows_grafana_lucene_formatting() -> None:
    all_values = {"channel": "*"}
    text = "payment.channel:${channel:lucene} AND payment.merchant_id:$merchant"
    assert check.interpolate(text, {"channel": check.ALL, "merchant": "m1"}, all_values) == (
        "payment.channel:* AND payment.merchant_id:m1"
    )
    assert check.interpolate(text, {"channel": ["alipay", "bank_b"], "merchant": ["m1"]}, all_values) == (
        'payment.channel:("alipay" OR "bank_b") AND payment.merchant_id:m1'
    )


def test_search_body_nests_buckets_in_order_with_metrics_innermost() -> None:
    panel = next(p for p in q.PAYMENTS.es_panels if p.key == "latency")
    target = grafana.build(q.PAYMENTS)["panels"][q.PAYMENTS.panels.index(panel)]["targets"][0]
    body = check.search_body(target, START, END, {"channel": ["alipay"], "merchant": check.ALL}, {"merchant": "*"})
    assert body["size"] == 0
    (time_filter, query) = body["query"]["bool"]["filter"]
    assert time_filter["range"]["@timestamp"] == {"gte": START.isoformat(), "lte": END.isoformat()}
    assert query["query_string"]["query"] == panel.lucene().replace("$channel", "alipay").replace("$merchant", "*")
    terms = body["aggs"]["10"]
    assert terms["terms"]["field"] == "payment.channel"
    histogram = terms["aggs"]["20"]["date_histogram"]
    assert histogram["fixed_interval"] == "60s"  # auto: about 100 points over an hour
    assert terms["aggs"]["20"]["aggs"]["1"] == {
        "percentiles": {"field": "payment.latency_ms", "percents": [50.0, 95.0, 99.0]}
    }


def test_raw_document_panels_ask_for_documents_newest_first() -> None:
    model = grafana.build(q.STUCK)
    target = model["panels"][0]["targets"][0]
    body = check.search_body(target, START, END, {"channel": check.ALL, "merchant": check.ALL}, {})
    assert "aggs" not in body and body["size"] == 2000
    assert body["sort"][0] == {"@timestamp": {"order": "desc"}}


def test_self_health_panels_name_metrics_the_collector_exports() -> None:
    """The PromQL names are the ones Prometheus scrapes from the collector's instruments."""
    from prometheus_client import REGISTRY, generate_latest

    from paywatch.collectors.collector import CollectorHealth

    health = CollectorHealth()
    health.record_batch(indexed=3, duplicates=0, invalid=1, rejected=0, seconds=0.1)
    health._lag.set(5, {"topic": "payments.events", "partition": 0})
    exposed = generate_latest(REGISTRY).decode()
    prom_panels = [p for d in q.DASHBOARDS for p in d.panels if isinstance(p, q.PromPanel)]
    assert prom_panels
    for panel in prom_panels:
        for name in re.findall(r"\b(paywatch_\w+)", panel.expr):
            assert re.search(rf"^{name}\{{", exposed, re.M), f"{panel.title}: {name} is not exported"


# --- provisioning against stand-ins of Grafana's and Kibana's HTTP APIs ---------------------


class _FakeApis(BaseHTTPRequestHandler):
    """The endpoints provisioning calls, answering as Grafana 11 and Kibana 8 document them."""

    datasources: dict[str, dict[str, Any]]
    dashboards: dict[str, dict[str, Any]]
    imports: list[tuple[str, bytes]]
    auth: list[str | None]

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        self.auth.append(self.headers.get("Authorization"))
        match = re.fullmatch(r"/api/datasources/uid/([\w-]+)", self.path)
        if match and match.group(1) in self.datasources:
            return self._reply(200, self.datasources[match.group(1)])
        return self._reply(404, {"message": "Data source not found"})

    def do_POST(self) -> None:
        self.auth.append(self.headers.get("Authorization"))
        body = self._body()
        if self.path == "/api/datasources":
            source = json.loads(body)
            if source["uid"] in self.datasources:
                return self._reply(409, {"message": "data source with the same uid already exists"})
            self.datasources[source["uid"]] = source
            return self._reply(200, {"message": "Datasource added", "datasource": source})
        if self.path == "/api/dashboards/db":
            payload = json.loads(body)
            uid = payload["dashboard"]["uid"]
            if uid in self.dashboards and not payload.get("overwrite"):
                return self._reply(412, {"message": "version-mismatch"})
            self.dashboards[uid] = payload["dashboard"]
            return self._reply(200, {"status": "success", "uid": uid})
        if self.path.startswith("/api/saved_objects/_import"):
            if self.headers.get("kbn-xsrf") is None:
                return self._reply(400, {"message": "Request must contain a kbn-xsrf header."})
            self.imports.append((self.path, body))
            lines = [line for line in body.splitlines() if line.startswith(b"{")]
            return self._reply(200, {"success": True, "successCount": len(lines), "errors": []})
        return self._reply(404, {"message": "not found"})


@pytest.fixture
def fake_apis() -> Iterator[tuple[str, type[_FakeApis]]]:
    handler = type("Handler", (_FakeApis,), {"datasources": {}, "dashboards": {}, "imports": [], "auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()


def test_provision_is_idempotent(fake_apis: tuple[str, type[_FakeApis]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = fake_apis
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_test")
    monkeypatch.setenv("KIBANA_API_KEY", "a2liYW5h")
    settings = DashboardSettings(grafana_url=url, environments=["default", "staging"])
    first = provision(settings, "http://es:9200", url)
    assert first.created_datasources == ["paywatch-es-default", "paywatch-es-staging"]
    assert state.datasources["paywatch-es-staging"]["jsonData"]["index"] == "logs-paywatch.*-staging"
    assert set(state.dashboards) == {d.uid for d in q.DASHBOARDS}
    assert first.kibana_objects == len(kibana.saved_objects())
    path, body = state.imports[0]
    assert "overwrite=true" in path and kibana.ndjson().encode() in body
    assert "Bearer glsa_test" in state.auth and "ApiKey a2liYW5h" in state.auth

    state.datasources["paywatch-es-default"]["url"] = "http://edited-by-operator:9200"
    second = provision(settings, "http://es:9200", url)
    assert second.created_datasources == [] and len(second.existing_datasources) == 2
    assert state.datasources["paywatch-es-default"]["url"] == "http://edited-by-operator:9200"  # kept
    assert second.dashboards == first.dashboards and len(state.imports) == 2


def test_provision_reports_a_refused_import(fake_apis: tuple[str, type[_FakeApis]]) -> None:
    url, _state = fake_apis
    with pytest.raises(ProvisionError, match="404"):
        provision(DashboardSettings(), "http://es:9200", url + "/nowhere", to_grafana=False)
