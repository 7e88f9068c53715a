"""`paywatch run --embedded`: every stage in one process, for a shop that runs on one machine.

Events arrive over HTTP (the SDK with `sdk.transport: http`, or any NDJSON client); the
pipeline is ticked on the wall clock, because absence (a missing callback, a silent
service) can only be seen with a clock. SIGTERM/SIGINT stop it cleanly, within
`embedded.shutdown_timeout_s` for in-flight requests and twice that at the latest.
"""

from __future__ import annotations

import os
import signal
import threading

import click
import structlog

from paywatch.clock import SystemClock
from paywatch.config import Config, read_secret
from paywatch.embedded.health import Progress
from paywatch.embedded.ingest import IngestServer
from paywatch.embedded.pipeline import Pipeline
from paywatch.embedded.queries import Queries
from paywatch.embedded.sqlite_store import SqliteStore
from paywatch.intake import Intake
from paywatch.logs import configure_logging

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
    try:
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
            settings,
        )
    except OSError as exc:  # in use, not this machine's address, an unknown host name, a privileged port
        store.close()
        raise click.ClickException(
            f"cannot listen on {settings.listen_host}:{settings.listen_port} ({exc.strerror or exc}): "
            "stop the process holding the port, or set embedded.listen_host / embedded.listen_port"
        ) from None
    ticks = Progress("detector tick", max(settings.stuck_after_s, 3 * settings.tick_interval_s))
    ingest.health["detectors"] = ticks.check
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _stop_within(stop, 2 * settings.shutdown_timeout_s))
    ingest.start()
    log.info("embedded paywatch running", ingest=f"{ingest.url}/v1/events", database=str(settings.database))
    try:
        while not stop.wait(settings.tick_interval_s):
            pipeline.tick(clock.now())
            ticks.beat()
    finally:
        ingest.stop()
        if pipeline.compensation is not None:
            pipeline.compensation.close()
        store.close()
        log.info("embedded paywatch stopped", events=pipeline.events_in)


def _stop_within(stop: threading.Event, bound_s: float) -> None:
    """Ask for a clean stop, and exit anyway after `bound_s` if a stage hangs: every acknowledged
    event is already committed to SQLite, so a forced exit loses nothing acknowledged."""
    if stop.is_set():
        return
    stop.set()

    def overran() -> None:
        log.error("shutdown overran its bound; exiting now", bound_s=bound_s)
        os._exit(1)

    timer = threading.Timer(bound_s, overran)
    timer.daemon = True
    timer.start()
