"""`paywatch devstack`: run real Kafka / Elasticsearch / Alertmanager on loopback without Docker."""

from __future__ import annotations

from pathlib import Path

import click

from paywatch import devstack as ds

_NAMES = click.Choice(list(ds.SERVERS))


def _selected(names: tuple[str, ...]) -> list[str]:
    return list(names) or list(ds.SERVERS)


@click.group(name="devstack", epilog="Example: paywatch devstack up kafka elasticsearch")
def devstack() -> None:
    """Local servers for development and tests (Kafka :19092, Elasticsearch :19200, Alertmanager :19093)."""


@devstack.command(epilog="Example: paywatch devstack fetch kafka")
@click.argument("names", nargs=-1, type=_NAMES)
def fetch(names: tuple[str, ...]) -> None:
    """Download (Maven Central) and build what the servers need; cached under ~/.cache/paywatch."""
    ds.fetch(*_selected(names))
    click.echo(f"devstack artifacts ready in {ds.CACHE_DIR}")


@devstack.command(epilog="Example: paywatch devstack up elasticsearch")
@click.argument("names", nargs=-1, type=_NAMES)
@click.option(
    "--alertmanager-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Alertmanager YAML (default: a config that accepts and drops everything).",
)
def up(names: tuple[str, ...], alertmanager_config: Path | None) -> None:
    """Start servers in the background (all when none named); reuse any already running."""
    for name in _selected(names):
        server = ds.default_server(name)
        if isinstance(server, ds.AlertmanagerServer) and alertmanager_config:
            server.config_yaml = alertmanager_config.read_text()
        server.start()
        how = (
            "already running"
            if server.reused or server.startup_seconds is None
            else (f"started in {server.startup_seconds}s")
        )
        where = getattr(server, "url", None) or getattr(server, "bootstrap", "")
        click.echo(f"{name:<14} {where:<26} {how}  (log: {server.log_path})")


@devstack.command(epilog="Example: paywatch devstack down kafka")
@click.argument("names", nargs=-1, type=_NAMES)
def down(names: tuple[str, ...]) -> None:
    """Stop servers started by `devstack up` or by the test fixtures (data is kept)."""
    for name in _selected(names):
        server = ds.default_server(name)
        if server.pid() is None:
            note = "running, not ours: left alone" if server.is_up() else "not running"
            click.echo(f"{name:<14} {note}")
            continue
        server.stop()
        click.echo(f"{name:<14} stopped")


@devstack.command(epilog="Example: paywatch devstack status")
def status() -> None:
    """Show which servers are up, their pids, work dirs and logs."""
    for name in ds.SERVERS:
        st = ds.default_server(name).status()
        state = "up" if st["up"] else "down"
        owner = f"pid {st['pid']}" if st["pid"] else ("external" if st["up"] else "-")
        click.echo(f"{name:<14} :{st['port']:<6} {state:<5} {owner:<12} {st['workdir']}")
