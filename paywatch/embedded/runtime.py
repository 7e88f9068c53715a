"""`paywatch run --embedded`: every stage in one process, for a shop that runs on one machine.

Events arrive over HTTP (the SDK with `sdk.transport: http`, or any NDJSON client); the
pipeline is ticked on the wall clock, because absence (a missing callback, a silent
service) can only be seen with a clock. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import signal
import threading

import click
import structlog

from paywatch.app.config import Config
from paywatch.clock import SystemClock
from paywatch.embedded.ingest import IngestServer
from paywatch.embedded.pipeline import Pipeline
from paywatch.embedded.queries import Queries
from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.intake import Intake
from paywatch.logs import configure_logging
from paywatch.secrets import read_secret

log = structlog.get_logger("paywatch.embedded")


def run_embedded(config: Config, stop: threading.Event | None = None) -> None:
    configure_logging()
    settings = config.embedded
    token = read_secret(settings.ingest_token_env, settings.ingest_token_file)
    if not token:
        raise click.ClickException(
            f"no ingest token: set ${settings.ingest_token_env} or embedded.ingest_token_file "
            "(services authenticate with it as a bearer token)"
        )
    clock = SystemClock()
    store = SqliteStore(settings.database, clock=clock)
    pipeline = Pipeline(config, store, started_at=clock.now(), clock=clock)
    if config.compensation.channels:
        from paywatch.embedded.compensation_stage import CompensationStage

        pipeline.compensation = CompensationStage(config.compensation)
    ingest = IngestServer(
        pipeline.ingest,
        store,
        token,
        settings.listen_host,
        settings.listen_port,
        settings.max_body_bytes,
        Intake(config.intake),
        Queries(pipeline.channels, store),
        config.pan,
    )
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ingest.start()
    log.info("embedded paywatch running", ingest=f"{ingest.url}/v1/events", database=str(settings.database))
    try:
        while not stop.wait(settings.tick_interval_s):
            pipeline.tick(clock.now())
    finally:
        ingest.stop()
        if pipeline.compensation is not None:
            pipeline.compensation.close()
        store.close()
        log.info("embedded paywatch stopped", events=pipeline.events_in)
