"""`paywatch relay-otlp`: the OTLP relay handler (paywatch/collectors/otlp_relay.py) on the Kafka stage loop."""

from __future__ import annotations

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.collectors.otlp_relay import OtlpRelay
from paywatch.kafka import ensure_topics
from paywatch.stage import Stage, stop_on_signals


@click.command(
    "relay-otlp", epilog="Example: paywatch relay-otlp --config paywatch.yaml --consumer-group paywatch-otlp-relay"
)
@config_option
@click.option(
    "--consumer-group",
    "--group",
    "consumer_group",
    default="paywatch-otlp-relay",
    show_default=True,
    help="Kafka consumer group.",
)
def relay_otlp(config: Config, consumer_group: str) -> None:
    """Put OpenTelemetry log records (OTLP/JSON on kafka.topics.otlp_logs) on paywatch's topics."""
    topics = config.kafka.topics
    ensure_topics(config.kafka, [topics.otlp_logs, topics.payments, topics.heartbeats, topics.logs, topics.dead_letter])
    stage = Stage(config.kafka, consumer_group, [topics.otlp_logs], OtlpRelay(topics, config.intake))
    stop_on_signals(stage.stop)
    stage.run()
