"""`paywatch run --embedded`: every stage in one process, for a shop that runs on one machine.

Events arrive over HTTP (the SDK with `sdk.transport: http`, or any NDJSON client); the
pipeline is ticked on the wall clock, because absence (a missing callback, a silent
service) can only be seen with a clock. On start the state is rebuilt from the store; the
process beats like every paywatch stage (service `paywatch-embedded`), into its own
detectors. SIGTERM/SIGINT stop it within `embedded.shutdown_timeout_s` for in-flight
requests, the same again for queued work, and exit at the latest after twice that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading

import click
import structlog

from paywatch.app.config import Config
from paywatch.app.embedded.health import Progress
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.pipeline import Overloaded, Pipeline
from paywatch.app.embedded.queries import Queries
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import SystemClock
from paywatch.collectors.heartbeat import ProcessHeartbeat
from paywatch.contract import Service, ServiceInstance
from paywatch.intake import Intake
from paywatch.logs import configure_logging
from paywatch.secrets import read_secret

log = structlog.get_logger("paywatch.app.embedded")

SERVICE = "paywatch-embedded"


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
    instance = f"{socket.gethostname()}-{os.getpid()}"
    if config.compensation.channels or config.compensation.order_webhook.url:
        from paywatch.compensation.driver import CompensationDriver

        try:
            pipeline.compensation = CompensationDriver(config.compensation, instance)
        except ValueError as exc:  # an unsigned order webhook, say: one line, not a traceback
            store.close()
            raise click.ClickException(str(exc)) from None
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
    ingest.health.update(pipeline.health_parts())
    ingest.health["ticks"] = ticks.check
    service = Service(name=SERVICE, instance=ServiceInstance(id=instance))
    beats = ProcessHeartbeat(  # the very parts /healthz reports, judged the same way
        service, settings.heartbeat_interval_s, lambda: {name: bool(v["ok"]) for name, v in ingest.verdicts().items()}
    )
    own_stop = stop is None
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: _stop_within(stop, 2 * settings.shutdown_timeout_s))
    pipeline.rebuild(clock.now())
    pipeline.start()
    ingest.start()
    log.info("embedded paywatch running", ingest=f"{ingest.url}/v1/events", database=str(settings.database))
    try:
        while not stop.wait(settings.tick_interval_s):
            now = clock.now()
            with contextlib.suppress(Overloaded):  # the detectors are behind: the next tick beats again
                pipeline.ingest(beats.due(now))  # through the store and its own detectors, like any beat
            pipeline.tick(now)
            ticks.beat()
    finally:
        last_beat = beats.stopping(clock.now())  # its checks judged while every part still runs
        ingest.stop()
        with contextlib.suppress(Overloaded):
            pipeline.ingest(last_beat)
        clean = pipeline.close(settings.shutdown_timeout_s)
        log.info("embedded paywatch stopped", events=pipeline.events_in, clean=clean)
        if clean:
            store.close()
        elif own_stop:
            # A receiver or channel still hanging: everything acknowledged is in the store and is
            # replayed on the next start, so leave now instead of waiting on it. The stop kept its
            # bound (status 0); exiting normally would join the hung delivery threads until
            # `_stop_within` ended the process as overrun.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _stop_within(stop: threading.Event, bound_s: float) -> None:
    """Ask for a clean stop, and exit anyway after `bound_s` if a stage hangs: every acknowledged
    event is already committed to SQLite, so a forced exit loses nothing acknowledged. A timer,
    because the main thread may be the one that hangs (a tick blocked on a hung receiver) and never
    reach the end of `run_embedded`."""
    if stop.is_set():
        return
    stop.set()

    def overran() -> None:
        log.error("shutdown overran its bound; exiting now", bound_s=bound_s)
        os._exit(1)

    timer = threading.Timer(bound_s, overran)
    timer.daemon = True
    timer.start()
