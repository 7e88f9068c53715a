"""`paywatch collect`: run the Kafka → Elasticsearch collector until SIGTERM or Ctrl-C."""

from __future__ import annotations

import gc
import threading

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.stage import stop_on_signals

SELF = "paywatch-collect"


@click.command(epilog="Example: PAYWATCH_CONFIG=paywatch.yaml paywatch collect")
@config_option
def collect(config: Config) -> None:
    """Store paywatch's Kafka topics in Elasticsearch: validated, PAN-masked, exactly once by event.id.

    Invalid messages and documents Elasticsearch refuses go to the dead-letter topic with the
    reason. Stops cleanly on SIGTERM/SIGINT (the batch in hand is finished or redone later)."""
    from paywatch.collectors.collector import Stopped, connect
    from paywatch.collectors.sdk import kafka_transport, open_logger
    from paywatch.logs import configure_logging
    from paywatch.metrics import start_metrics_server

    configure_logging()  # on stderr, like every stage: stdout stays free
    stop = threading.Event()
    stop_on_signals(stop)
    settings = config.collector
    if settings.metrics_port is not None:
        start_metrics_server(settings.metrics_port, settings.metrics_host)
    try:
        collector = connect(
            config.collector, config.kafka, config.elasticsearch, config.intake, config.pan, should_stop=stop.is_set
        )
    except Stopped:
        return
    # Our own heartbeats, through the SDK like any service: silence means the store is not fed.
    sdk = open_logger(
        SELF, config=config, transport=kafka_transport(config), checks=lambda: {"elasticsearch": not collector.paused}
    )
    # What exists now (modules, clients, settings) lives as long as the process: frozen, the cycle
    # collector stops rescanning it every few batches (about 1 µs per event, bench/collector.py).
    gc.collect()
    gc.freeze()
    try:
        collector.run()
    finally:
        sdk.close()
