"""`paywatch detect`: the Kafka worker (replay lives in paywatch/app/replay.py, beside the alert rules)."""

from __future__ import annotations

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config


@click.command(epilog="Example: paywatch detect --config paywatch.yaml --consumer-group paywatch-detect")
@config_option
@click.option(
    "--consumer-group",
    "--group",
    "consumer_group",
    default="paywatch-detect",
    show_default=True,
    help="Kafka consumer group of the workers.",
)
@click.option("--instance", help="This worker's instance id in its heartbeats (default: host-pid).")
def detect(config: Config, consumer_group: str, instance: str | None) -> None:
    """Run a detector worker on Kafka; start several with the same --consumer-group to scale out."""
    import logging

    from paywatch.detectors.runtime import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(config, consumer_group, instance)
