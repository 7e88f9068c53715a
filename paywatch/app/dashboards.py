"""`paywatch dashboards`: export the dashboards as files, provision them, check them against data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config


@click.group(epilog="Example: paywatch dashboards provision --grafana http://localhost:3000")
def dashboards() -> None:
    """Grafana and Kibana dashboards as code."""


@dashboards.command(epilog="Example: paywatch dashboards export dashboards --environment prod")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kibana-url", help="Kibana URL for Grafana's Discover links (default: config).")
@click.option("--environment", "environments", multiple=True, help="Data stream namespace (repeatable).")
@click.option(
    "--es-url",
    default="http://elasticsearch:9200",
    show_default=True,
    help="Elasticsearch as Grafana's server reaches it, for the provisioned data sources.",
)
@config_option
def export(directory: Path, kibana_url: str | None, environments: tuple[str, ...], es_url: str, config: Config) -> None:
    """Write DIRECTORY/grafana/<uid>.json, DIRECTORY/kibana/paywatch.ndjson and Grafana's file
    provisioning config under DIRECTORY/provisioning/."""
    from paywatch.dashboards.export import write_export

    settings = config.dashboards
    written = write_export(
        directory,
        kibana_url=kibana_url or config.kibana.url,
        environments=environments or tuple(settings.environments),
        es_url=es_url,
    )
    for path in written:
        click.echo(str(path))


@dashboards.command(epilog="Example: paywatch dashboards docs docs/dashboards.md")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/dashboards.md"))
def docs(path: Path) -> None:
    """Write the panel reference (default docs/dashboards.md) from the panel specs."""
    from paywatch.dashboards.docs import render

    path.write_text(render())
    click.echo(str(path))


@dashboards.command(
    epilog="Example: GRAFANA_TOKEN=... paywatch dashboards provision --grafana http://localhost:3000 --skip-kibana"
)
@click.option(
    "--grafana",
    "grafana_url",
    help="Grafana URL (default: config). Credentials: GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD.",
)
@click.option(
    "--kibana",
    "kibana_url",
    help="Kibana URL (default: config). Credentials: KIBANA_API_KEY, or KIBANA_USER and KIBANA_PASSWORD.",
)
@click.option("--skip-grafana", is_flag=True)
@click.option("--skip-kibana", is_flag=True)
@config_option
def provision(
    grafana_url: str | None, kibana_url: str | None, skip_grafana: bool, skip_kibana: bool, config: Config
) -> None:
    """Create the Elasticsearch data sources if missing and import every dashboard (idempotent)."""
    from paywatch.dashboards.provision import ProvisionError
    from paywatch.dashboards.provision import provision as run

    settings = config.dashboards.model_copy(update={"grafana_url": grafana_url} if grafana_url else {})
    try:
        report = run(
            settings,
            settings.elasticsearch_url or config.elasticsearch.url,
            kibana_url or config.kibana.url,
            to_grafana=not skip_grafana,
            to_kibana=not skip_kibana,
        )
    except ProvisionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"grafana: {len(report.dashboards)} dashboards, data sources created {report.created_datasources or '-'}, "
        f"kept {report.existing_datasources or '-'}; kibana: {report.kibana_objects} objects"
    )


@dashboards.command(epilog="Example: paywatch dashboards check --since 6h --channel alipay")
@click.option("--since", default="1h", show_default=True, help="Look back this far: 30m, 6h, 2d.")
@click.option("--environment", help="Data stream namespace (default: elasticsearch.namespace).")
@click.option("--channel", multiple=True, help="Fill the channel variable (default: All).")
@click.option("--merchant", multiple=True, help="Fill the merchant variable (default: All).")
@config_option
def check(
    since: str, environment: str | None, channel: tuple[str, ...], merchant: tuple[str, ...], config: Config
) -> None:
    """Run every panel's query against Elasticsearch; exit 1 if any would show "No data"."""
    from paywatch.dashboards import check as checker
    from paywatch.dashboards import grafana
    from paywatch.elastic import client

    namespace = environment or config.elasticsearch.namespace
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if not since[:-1].isdigit() or since[-1] not in units:
        raise click.BadParameter(f"{since!r}: use a number and m, h or d", param_hint="--since")
    end = datetime.now(UTC)
    start = end - timedelta(**{units[since[-1]]: int(since[:-1])})
    variables = {"channel": list(channel) or checker.ALL, "merchant": list(merchant) or checker.ALL}
    found = checker.panel_rows(
        client(config.elasticsearch),
        grafana.datasource_index(namespace),
        grafana.build_all(environments=(namespace,)).values(),
        start,
        end,
        variables,
    )
    empty = 0
    for (dashboard, panel), rows in found.items():
        empty += not rows
        click.echo(f"{'ok     ' if rows else 'NO DATA'} {len(rows):6d} rows  {dashboard} / {panel}")
    if empty:
        raise SystemExit(1)
