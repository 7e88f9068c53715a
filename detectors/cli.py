"""`paywatch replay` (a file through the detection core) and `paywatch detect` (the Kafka worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from paywatch.clock import iso_utc
from paywatch.config import ConfigError, load_config


def _config(path: str | None):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command(epilog="Example: paywatch replay events.jsonl --out findings.jsonl --truth truth.jsonl")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Findings, one JSON object per line.",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ground-truth incidents (JSONL from `paywatch simulate`): print recall, false incidents, delays.",
)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="paywatch.yaml")
@click.option(
    "--drain-s",
    default=0.0,
    show_default=True,
    help="Keep ticking this many simulated seconds after the last event (late deadlines).",
)
@click.option("--fail-on-miss", is_flag=True, help="Exit 1 when an incident is missed or a false incident fires.")
def replay(
    events: Path, out: Path, truth: Path | None, config_path: str | None, drain_s: float, fail_on_miss: bool
) -> None:
    """Replay EVENTS.jsonl through the detectors at full speed, clocked by event time."""
    from paywatch.detectors.engine import DetectionEngine
    from paywatch.detectors.replay import ReplayStats
    from paywatch.detectors.replay import replay as run
    from paywatch.finding import decode_finding, encode_finding

    engine = DetectionEngine(_config(config_path).detectors)
    stats = ReplayStats()

    def reject(number: int, reason: str) -> None:
        click.echo(f"{events}:{number}: rejected: {reason}", err=True)

    with events.open("rb") as src, out.open("wb") as dst:
        for finding in run(src, engine, stats, drain_s=drain_s, on_reject=reject):
            dst.write(encode_finding(finding) + b"\n")
    click.echo(
        f"{stats.events} events, {stats.findings} findings, {len(stats.rejected)} rejected lines → {out}", err=True
    )
    if truth is None:
        return
    from paywatch.detectors.scoring import read_truth, score

    findings = [decode_finding(line) for line in out.read_bytes().splitlines() if line]
    result = score(findings, read_truth(truth.read_bytes().splitlines()))
    for o in result.outcomes:
        what = "recovered" if o.recovery else "caught"
        status = f"{what} after {o.delay_s:.1f} s" if o.caught else "MISSED"
        click.echo(f"{o.incident:<12} {o.kind:<28} {o.subject:<16} {status}")
    click.echo(
        f"recall {result.caught}/{result.incidents} ({result.recall:.0%}), "
        f"false incidents {len(result.false_incidents)}"
    )
    for f in result.false_incidents:
        click.echo(f"  false: {iso_utc(f.timestamp)} {f.finding.fingerprint} {f.finding.summary}")
    if fail_on_miss and (result.missed or result.false_incidents):
        sys.exit(1)


@click.command(epilog="Example: paywatch detect --config paywatch.yaml --group paywatch-detect")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="paywatch.yaml")
@click.option("--group", default="paywatch-detect", show_default=True, help="Kafka consumer group of the workers.")
@click.option("--instance", help="This worker's instance id in its heartbeats (default: host-pid).")
def detect(config_path: str | None, group: str, instance: str | None) -> None:
    """Run a detector worker on Kafka; start several with the same --group to scale out."""
    import logging

    from paywatch.detectors.runtime import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(_config(config_path), group, instance)
