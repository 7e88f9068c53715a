"""Import the dashboards into a running Grafana and Kibana, idempotently.

Grafana: each environment's Elasticsearch data source (and the Prometheus one, when
configured) is created only if missing, so an operator's later edits (auth, TLS) survive;
dashboards are saved with `overwrite`, keyed by their fixed uids. Kibana: one saved-objects
import with `overwrite=true`, keyed by the objects' fixed ids. Running it twice changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from paywatch.dashboards import grafana, kibana
from paywatch.dashboards.settings import DashboardSettings
from paywatch.secrets import read_secret


class ProvisionError(RuntimeError):
    """Grafana or Kibana refused what we sent; the message says which object and why."""


@dataclass
class ProvisionReport:
    created_datasources: list[str] = field(default_factory=list)
    existing_datasources: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    kibana_objects: int = 0


def _grafana_api(settings: DashboardSettings) -> Any:
    from grafana_client import GrafanaApi

    token = read_secret(settings.grafana_token_env, settings.grafana_token_file)
    user, password = os.environ.get(settings.grafana_user_env), os.environ.get(settings.grafana_password_env)
    credential: str | tuple[str, str] | None = token or ((user, password) if user and password else None)
    return GrafanaApi.from_url(settings.grafana_url, credential=credential, timeout=settings.timeout_s)


def provision_grafana(settings: DashboardSettings, es_url: str, kibana_url: str, report: ProvisionReport) -> None:
    from grafana_client.client import GrafanaClientError

    api = _grafana_api(settings)
    wanted = [grafana.datasource(es_url, env) for env in settings.environments]
    if settings.prometheus_url:
        wanted.append(grafana.prometheus_datasource(settings.prometheus_url))
    for source in wanted:
        try:
            api.datasource.get_datasource_by_uid(source["uid"])
            report.existing_datasources.append(source["uid"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise ProvisionError(f"Grafana data source {source['uid']}: {exc}") from exc
            api.datasource.create_datasource(source)
            report.created_datasources.append(source["uid"])
    environments = tuple(settings.environments)
    for uid, model in grafana.build_all(kibana_url, environments).items():
        try:
            api.dashboard.update_dashboard({"dashboard": model, "overwrite": True, "message": "paywatch provision"})
        except GrafanaClientError as exc:
            raise ProvisionError(f"Grafana dashboard {uid}: {exc}") from exc
        report.dashboards.append(uid)


def _kibana_auth(settings: DashboardSettings) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    api_key = read_secret(settings.kibana_api_key_env, settings.kibana_api_key_file)
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}, None
    user, password = os.environ.get(settings.kibana_user_env), os.environ.get(settings.kibana_password_env)
    return {}, httpx.BasicAuth(user, password) if user and password else None


def provision_kibana(settings: DashboardSettings, kibana_url: str, report: ProvisionReport) -> None:
    headers, auth = _kibana_auth(settings)
    response = httpx.post(
        f"{kibana_url.rstrip('/')}/api/saved_objects/_import",
        params={"overwrite": "true"},
        headers={"kbn-xsrf": "paywatch", **headers},
        auth=auth,
        files={"file": ("paywatch.ndjson", kibana.ndjson().encode(), "application/ndjson")},
        timeout=settings.timeout_s,
    )
    if response.status_code != 200:
        raise ProvisionError(f"Kibana import answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    if not body.get("success"):
        errors = [f"{e.get('type')}/{e.get('id')}: {e.get('error')}" for e in body.get("errors", [])]
        raise ProvisionError("Kibana import refused objects: " + "; ".join(errors))
    report.kibana_objects = int(body.get("successCount", 0))


def provision(
    settings: DashboardSettings, es_url: str, kibana_url: str, *, to_grafana: bool = True, to_kibana: bool = True
) -> ProvisionReport:
    """`kibana_url` is `kibana.url`: Grafana's Discover links point there, saved objects go there."""
    report = ProvisionReport()
    if to_grafana:
        provision_grafana(settings, es_url, kibana_url, report)
    if to_kibana:
        provision_kibana(settings, kibana_url, report)
    return report
