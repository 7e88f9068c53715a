"""`paywatch compensate`: the compensating-query stage on Kafka."""

from __future__ import annotations

import sys

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config


@click.command(epilog="Example: paywatch compensate --config paywatch.yaml --dry-run")
@config_option
@click.option("--instance", help="Instance id in events and heartbeats (default: host-pid).")
@click.option("--dry-run", is_flag=True, help="Query and audit, but send no webhook; actions are marked dry-run.")
def compensate(config: Config, instance: str | None, dry_run: bool) -> None:
    """Ask the channels about stuck, unknown and duplicate attempts; publish repairs and refund candidates."""
    from paywatch.compensation.runtime import run
    from paywatch.logs import configure_logging

    configure_logging()
    if dry_run:
        config.compensation.dry_run = True
    try:
        run(config, instance)
    except ValueError as exc:  # missing credentials and the like: say which, by name
        click.echo(f"cannot start the compensator: {exc}", err=True)
        sys.exit(2)
