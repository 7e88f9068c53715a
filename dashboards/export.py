"""The dashboards as files, for GitOps users and for Grafana/Kibana file provisioning.

`dashboards/grafana/<uid>.json`, `dashboards/kibana/paywatch.ndjson` and Grafana's file
provisioning config (`dashboards/provisioning/`, for a compose stack: mount `datasources/`
and `dashboards/` under /etc/grafana/provisioning and `dashboards/grafana` at
/var/lib/grafana/dashboards/paywatch) in the repository are this output with the defaults;
a test keeps them equal to what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from paywatch.dashboards import grafana, kibana

GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards/paywatch"


def export_files(
    kibana_url: str = grafana.DEFAULT_KIBANA_URL,
    environments: tuple[str, ...] = grafana.DEFAULT_ENVIRONMENTS,
    es_url: str = "http://elasticsearch:9200",
    prometheus_url: str = "http://prometheus:9090",
) -> dict[str, str]:
    """Relative path → file content. `es_url` and `prometheus_url` are Elasticsearch and the
    Prometheus scraping paywatch's metrics, as Grafana's server reaches them."""
    files = {
        f"grafana/{uid}.json": json.dumps(model, indent=2, sort_keys=True) + "\n"
        for uid, model in grafana.build_all(kibana_url, environments).items()
    }
    files["kibana/paywatch.ndjson"] = kibana.ndjson()
    sources = [grafana.datasource(es_url, env) for env in environments]
    sources.append(grafana.prometheus_datasource(prometheus_url))
    files["provisioning/datasources/paywatch.yaml"] = yaml.safe_dump(
        {"apiVersion": 1, "datasources": [{**s, "editable": True} for s in sources]},
        sort_keys=False,
        allow_unicode=True,
    )
    provider = {
        "name": "paywatch",
        "type": "file",
        "allowUiUpdates": False,
        "options": {"path": GRAFANA_DASHBOARDS_DIR},
    }
    files["provisioning/dashboards/paywatch.yaml"] = yaml.safe_dump(
        {"apiVersion": 1, "providers": [provider]}, sort_keys=False
    )
    return files


def write_export(directory: Path, **kwargs: object) -> list[Path]:
    written = []
    for relative, content in export_files(**kwargs).items():  # type: ignore[arg-type]
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
