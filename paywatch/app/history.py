"""Operator commands that read history (`orders show`, `alerts list`, `incidents`). They work
the same against SQLite (embedded) and Elasticsearch (kafka backend): they only see a
HistoryReader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.app.embedded.settings import DEMO_DATABASE
from paywatch.clock import iso_utc
from paywatch.store import HistoryReader, get

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
database_option = click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file of the embedded backend (default: embedded.database, else the demo's).",
)


def history_reader(config: Config, database: Path | None = None) -> HistoryReader:
    """The backend named in the config: the SQLite file, or Elasticsearch."""
    if config.backend == "kafka" and database is None:
        from paywatch.elastic import ElasticHistory, client

        return ElasticHistory(client(config.elasticsearch), config.elasticsearch.namespace)
    from paywatch.app.embedded.sqlite_store import SqliteStore

    if database is not None:
        if not database.exists():
            raise click.ClickException(f"no embedded database at {database}")
        return SqliteStore(database)
    database = config.embedded.database
    if not database.exists() and DEMO_DATABASE.exists():
        # Right after `paywatch demo`, the operator commands read what the demo just wrote.
        click.echo(f"reading the demo's database {DEMO_DATABASE} (there is no {database} yet)", err=True)
        database = DEMO_DATABASE
    if not database.exists():
        raise click.ClickException(
            f"no embedded database at {database}; run `paywatch run --embedded` or `paywatch demo`"
        )
    return SqliteStore(database)


def _table(title: str, *headers: str, times: int = 1) -> Table:
    """The first `times` columns hold times: ISO 8601 UTC, kept whole at any terminal width;
    the others fold rather than cut, so an id is never shown shortened."""
    columns = [
        Column(h, no_wrap=True, min_width=20) if i < times else Column(h, overflow="fold")
        for i, h in enumerate(headers)
    ]
    return Table(*columns, title=title)


def _print(rows: list[dict[str, Any]], table: Table, cells, as_json: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    for row in rows:
        table.add_row(*[("" if c is None else str(c)) for c in cells(row)])
    Console().print(table)


def _what(doc: dict[str, Any]) -> str:
    dataset = get(doc, "event.dataset") or ""
    if dataset == "paywatch.finding":
        return f"finding {get(doc, 'finding.kind')} {get(doc, 'finding.state')}"
    if dataset == "paywatch.alert":
        return f"alert {get(doc, 'alert.labels.alertname') or ''} {get(doc, 'alert.status')}"
    return f"{dataset.removeprefix('paywatch.')} {get(doc, 'event.action') or ''}"


@click.group(epilog="Example: paywatch orders show ord-000123")
def orders() -> None:
    """Look up business orders."""


@orders.command("show", epilog="Example: paywatch orders show ord-000123 --json")
@click.argument("order_id")
@config_option
@database_option
@json_option
def show(order_id: str, config: Config, database: Path | None, as_json: bool) -> None:
    """Everything paywatch knows about ORDER_ID, oldest first: attempts, callbacks, queries, findings, actions."""
    rows = history_reader(config, database).order_timeline(order_id)
    if not rows:
        raise click.ClickException(f"no events stored for order {order_id}")
    table = _table(
        f"order {order_id}", "time (event, UTC)", "what", "attempt", "channel", "outcome", "status", "amount"
    )
    _print(
        rows,
        table,
        lambda d: (
            iso_utc(d["@timestamp"]),
            _what(d),
            get(d, "payment.attempt_id"),
            get(d, "payment.channel"),
            get(d, "event.outcome") or get(d, "finding.state"),
            get(d, "payment.status") or get(d, "payment.error_code"),
            _amount(d),
        ),
        as_json,
    )


def _amount(doc: dict[str, Any]) -> str | None:
    minor, currency = get(doc, "payment.amount_minor"), get(doc, "payment.currency")
    return None if minor is None else f"{minor} {currency or ''} (minor units)"


@click.group(epilog="Example: paywatch alerts list --status firing")
def alerts() -> None:
    """Alerts paywatch raised."""


@alerts.command("list", epilog="Example: paywatch alerts list --status firing")
@click.option("--status", type=click.Choice(["firing", "resolved"]), help="Only alerts in this state.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@config_option
@database_option
@json_option
def list_alerts(status: str | None, limit: int, config: Config, database: Path | None, as_json: bool) -> None:
    """The latest state of each alert, newest first."""
    rows = history_reader(config, database).alerts(status, limit)
    table = _table("alerts", "changed at (UTC)", "alert", "status", "severity", "channel/service", "summary")
    _print(
        rows,
        table,
        lambda d: (
            iso_utc(d["@timestamp"]),
            get(d, "alert.labels.alertname"),
            get(d, "alert.status"),
            get(d, "alert.labels.severity"),
            get(d, "alert.labels.channel") or get(d, "alert.labels.service"),
            get(d, "alert.annotations.summary"),
        ),
        as_json,
    )


@click.command(epilog="Example: paywatch incidents --limit 20")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@config_option
@database_option
@json_option
def incidents(limit: int, config: Config, database: Path | None, as_json: bool) -> None:
    """Incident-level findings, newest first, with when they opened and resolved."""
    rows = history_reader(config, database).incidents(limit)
    table = _table("incidents", "opened (UTC)", "resolved (UTC)", "kind", "severity", "subject", "summary", times=2)
    _print(
        rows,
        table,
        lambda r: (
            iso_utc(r["opened_at"]),
            iso_utc(r["resolved_at"]) or "open",
            r["kind"],
            r["severity"],
            r["channel"] or r["service"] or (f"merchant {r['merchant']}" if r.get("merchant") else "all"),
            r["summary"],
        ),
        as_json,
    )
