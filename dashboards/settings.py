"""Configuration of dashboard provisioning (the `dashboards:` section of paywatch.yaml).

Credentials for Grafana and Kibana are read from the environment or a file, never from
this file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from paywatch.settings import Section


class DashboardSettings(Section):
    """Where `paywatch dashboards provision` imports the Grafana dashboards (Kibana: `kibana.url`)."""

    grafana_url: str = Field("http://localhost:3000", description="Grafana base URL for `dashboards provision`.")
    elasticsearch_url: str | None = Field(
        None,
        description="Elasticsearch URL as Grafana's server reaches it (in Docker, often not the URL "
        "paywatch uses); default: `elasticsearch.url`.",
    )
    prometheus_url: str | None = Field(
        None,
        description="Prometheus URL for the self-health panels (consumer lag, dead letters); "
        "when set, provisioning creates the `paywatch-prometheus` data source if missing.",
    )
    environments: list[str] = Field(
        default_factory=lambda: ["default"],
        description="Data stream namespaces to offer in the dashboards' Environment picker; "
        "each gets its own Grafana Elasticsearch data source.",
    )
    grafana_token_env: str = Field(
        "GRAFANA_TOKEN", description="Environment variable holding a Grafana service-account token."
    )
    grafana_token_file: Path | None = Field(None, description="File holding a Grafana service-account token.")
    grafana_user_env: str = Field(
        "GRAFANA_USER", description="Environment variable holding a Grafana user (basic auth, when no token)."
    )
    grafana_password_env: str = Field(
        "GRAFANA_PASSWORD", description="Environment variable holding that user's password."
    )
    kibana_api_key_env: str = Field(
        "KIBANA_API_KEY", description="Environment variable holding a Kibana/Elasticsearch API key."
    )
    kibana_api_key_file: Path | None = Field(None, description="File holding a Kibana API key.")
    kibana_user_env: str = Field(
        "KIBANA_USER", description="Environment variable holding a Kibana user (basic auth, when no API key)."
    )
    kibana_password_env: str = Field(
        "KIBANA_PASSWORD", description="Environment variable holding that user's password."
    )
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one provisioning request.")
