"""`paywatch detect`: the Kafka worker (replay lives in paywatch/app/cli.py, beside the alert rules)."""

from __future__ import annotations

import click

from paywatch.config import ConfigError, load_config


def _config(path: str | None):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="paywatch.yaml")
@click.option("--group", default="paywatch-detect", show_default=True, help="Kafka consumer group of the workers.")
@click.option("--instance", help="This worker's instance id in its heartbeats (default: host-pid).")
def detect(config_path: str | None, group: str, instance: str | None) -> None:
    """Run a detector worker on Kafka; start several with the same --group to scale out."""
    import logging

    from paywatch.detectors.runtime import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(_config(config_path), group, instance)
