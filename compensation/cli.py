"""`paywatch compensate`: the compensating-query stage on Kafka."""

from __future__ import annotations

import sys

import click

from paywatch.config import ConfigError, load_config


@click.command(epilog="Example: paywatch compensate --config paywatch.yaml --dry-run")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="paywatch.yaml")
@click.option("--instance", help="Instance id in events and heartbeats (default: host-pid).")
@click.option("--dry-run", is_flag=True, help="Query and audit, but send no webhook; actions are marked dry-run.")
def compensate(config_path: str | None, instance: str | None, dry_run: bool) -> None:
    """Ask the channels about stuck, unknown and duplicate attempts; publish repairs and refund candidates."""
    from paywatch.compensation.runtime import run
    from paywatch.logs import configure_logging

    configure_logging()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if dry_run:
        config.compensation.dry_run = True
    try:
        run(config, instance)
    except ValueError as exc:  # missing credentials and the like: say which, by name
        click.echo(f"cannot start the compensator: {exc}", err=True)
        sys.exit(2)
