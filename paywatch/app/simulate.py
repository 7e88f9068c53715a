"""`paywatch simulate`: payment traffic with injected incidents, to a JSONL file, Kafka or
the embedded HTTP ingest, as fast as possible or paced in real / compressed time."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.contract import Event, encode
from paywatch.secrets import read_secret
from paywatch.simulator.scenarios import DEFAULT_START, SCENARIOS, ScenarioError, parse_duration
from paywatch.simulator.scenarios import simulate as run_simulation
from paywatch.simulator.settings import SimulatorSettings
from paywatch.truth import write_truth

BATCH = 500


def default_start(speed: float, live: bool) -> datetime:
    """Paced events to a live paywatch carry the present: it judges by its own clock, and events
    stamped months ago are a clock far off (judged at arrival, flagged) rather than traffic."""
    if speed > 0 and live:
        return datetime.now(UTC).replace(microsecond=0)
    return DEFAULT_START


def paced(events: Iterable[Event], start: datetime, speed: float) -> Iterator[Event]:
    """Release each event when its event time comes, `speed` times faster than real time
    (the edge of the simulator that reads the wall clock; the simulation itself never does)."""
    wall0 = time.monotonic()
    for event in events:
        due = (event.timestamp - start).total_seconds() / speed
        wait = due - (time.monotonic() - wall0)
        if wait > 0:
            time.sleep(wait)
        yield event


def _send_all(transport: object, records: list, what: str, give_up_s: float) -> int:
    """Deliver a batch, retrying what the receiver could not take yet (for at most `give_up_s`);
    returns how many events the receiver refused for good."""
    from paywatch.collectors.transports import Record

    pending: list[Record] = records
    delay, deadline = 0.2, time.monotonic() + give_up_s
    refused = 0
    while pending:
        outcome = transport.send(pending, lambda waited: waited < give_up_s)  # type: ignore[attr-defined]
        for i, reason in outcome.rejected:
            refused += 1
            click.echo(f"{what} refused event {pending[i].key}: {reason}", err=True)
        if not outcome.retry:
            return refused
        if time.monotonic() + delay > deadline:
            raise click.ClickException(
                f"{what} still unavailable after {give_up_s:g} s ({outcome.reason}); "
                f"{len(outcome.retry)} events of this batch were not delivered"
            )
        click.echo(f"{what} unavailable ({outcome.reason}); retrying {len(outcome.retry)} events", err=True)
        pending = [pending[i] for i in outcome.retry]
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    return refused


def _stream(
    events: Iterable[Event], config: Config, kafka: bool, ingest: str | None, out: IO[bytes] | None, give_up_s: float
) -> dict:
    from paywatch.collectors.transports import HttpTransport, Record

    topic_of = config.kafka.topics.for_events()
    sinks: list[tuple[str, object]] = []
    if kafka:
        from paywatch.collectors.sdk import kafka_transport
        from paywatch.kafka import ensure_topics

        ensure_topics(config.kafka, sorted(set(topic_of.values())))
        sinks.append(("kafka", kafka_transport(config)))
    if ingest:
        token = read_secret(config.sdk.ingest_token_env, config.sdk.ingest_token_file)
        if not token:
            raise click.ClickException(
                f"the HTTP ingest needs a bearer token: set ${config.sdk.ingest_token_env} or sdk.ingest_token_file"
            )
        sinks.append(("http ingest", HttpTransport(ingest, token, config.sdk.send_timeout_s)))
    counts = {"events": 0, "refused": 0}
    batch: list[Record] = []
    last_flush = time.monotonic()

    def flush() -> None:
        for what, transport in sinks:
            counts["refused"] += _send_all(transport, batch, what, give_up_s)
        batch.clear()

    try:
        for event in events:
            value = encode(event)
            counts["events"] += 1
            if out is not None:
                out.write(value + b"\n")
            if sinks:
                batch.append(Record(topic_of[event.event.dataset], event.key, value))
                if len(batch) >= BATCH or time.monotonic() - last_flush > 0.2:
                    flush()
                    last_flush = time.monotonic()
        if batch:
            flush()
    finally:
        for _, transport in sinks:
            transport.close()  # type: ignore[attr-defined]
    return counts


@click.command(
    epilog="\b\nExamples:\n"
    "  paywatch simulate --duration 20m -s callback_outage:channel=alipay,start=5m -o ev.jsonl --truth t.jsonl\n"
    "  paywatch simulate --kafka --speed 60 -s channel_down:channel=bank_b"
)
@click.option(
    "-s",
    "--scenario",
    "scenarios",
    multiple=True,
    default=("normal",),
    show_default=True,
    help=f"Scenario to inject, repeatable: {', '.join(SCENARIOS)}, with parameters, e.g. "
    "callback_outage:channel=alipay,start=20m,duration=10m (docs/simulator.md lists them)",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed and scenarios → identical output.")
@click.option("--duration", default="30m", show_default=True, help="Simulated time to cover (90s, 20m, 6h).")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z"]),  # %z takes Z and +08:00
    default=None,
    help=f"Simulated start (UTC). Default: now when paced (--speed > 0) to --kafka or --ingest, so a "
    f"live paywatch gets events of the present; else {DEFAULT_START:%Y-%m-%dT%H:%M:%SZ}.",
)
@click.option("--rate", type=float, default=None, help="Peak new orders per second (default from config).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Events as JSONL ('-' = stdout; the default unless --kafka or --ingest).")  # fmt: skip
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False), default=None,
              help="Write the ground truth of the injected incidents (JSONL) here.")  # fmt: skip
@click.option("--kafka", is_flag=True, help="Produce to Kafka (kafka.bootstrap_servers and topics from config).")
@click.option("--ingest", default=None, help="POST to the embedded HTTP ingest at this URL (token from sdk config).")
@click.option("--speed", type=float, default=0.0, show_default=True,
              help="Pace by event time: 1 = real time, 60 = a minute per second; 0 = as fast as possible.")  # fmt: skip
@click.option(
    "--telemetry",
    type=click.Choice(["sdk", "direct"]),
    default="sdk",
    show_default=True,
    help="sdk: every simulated service emits through the paywatch SDK; direct: build the same events "
    "without it (byte-identical, ~4x faster, for long file runs).",
)
@click.option("--give-up-after", "give_up_s", type=float, default=120.0, show_default=True,
              help="Seconds to keep retrying an unavailable Kafka or ingest before failing.")  # fmt: skip
@config_option
def simulate(
    scenarios: tuple[str, ...],
    seed: int,
    duration: str,
    start: datetime | None,
    rate: float | None,
    out: str | None,
    truth_path: str | None,
    kafka: bool,
    ingest: str | None,
    speed: float,
    telemetry: str,
    give_up_s: float,
    config: Config,
) -> None:
    """Generate realistic payment traffic, with incidents injected and their ground truth."""
    settings: SimulatorSettings = config.simulator
    if rate is not None:
        settings = settings.model_copy(update={"peak_orders_per_s": rate})
    start = default_start(speed, kafka or bool(ingest)) if start is None else start.astimezone(UTC)
    try:
        seconds = parse_duration(duration)
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None
    try:
        run = run_simulation(
            scenarios,
            seed=seed,
            duration=seconds,
            start=start,
            settings=settings,
            keep_records=False,
            telemetry=telemetry,
        )
    except ScenarioError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    if out is None and not kafka and not ingest:
        out = "-"
    events: Iterable[Event] = run if speed <= 0 else paced(run, start, speed)
    wall0 = time.monotonic()
    handle: IO[bytes] | None = None
    try:
        if out == "-":
            handle = sys.stdout.buffer
        elif out is not None:
            handle = Path(out).open("wb")  # noqa: SIM115 - closed below, after the run
        counts = _stream(events, config, kafka, ingest, handle, give_up_s)
    finally:
        if handle is not None and handle is not sys.stdout.buffer:
            handle.close()
    if truth_path:
        write_truth(run.incidents, truth_path)
    took = time.monotonic() - wall0
    click.echo(
        f"simulated {duration} from {start:%Y-%m-%dT%H:%M:%SZ}: {counts['events']} events in {took:.1f} s "
        f"({counts['events'] / max(took, 1e-9):,.0f} events/s), {len(run.incidents)} incidents"
        + (f", {counts['refused']} refused by the receiver" if counts["refused"] else ""),
        err=True,
    )
    if counts["refused"]:
        sys.exit(1)
