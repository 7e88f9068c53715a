"""`paywatch replay`: a file of events through the detectors and, with `--pages`, the alert rules."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import click

from paywatch.app.cli import config_option
from paywatch.app.config import Config


@click.command(
    epilog="Example, before changing a rule (which pages would that history have sent?):\n\n"
    "\b\n"
    "  paywatch replay events.jsonl --pages pages.jsonl --rules rules.yaml --truth truth.jsonl"
)
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Findings, one JSON object per line.",
)
@click.option(
    "--pages",
    "pages_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pages on-call would have received (firing and resolved notifications), one JSON object per line: "
    "the findings run through the alert rules at event time.",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Alert rules to judge with (default: the config's alerts.rules_file, else the shipped rules.yaml).",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ground-truth incidents (JSONL from `paywatch simulate`): print recall, delays and false alarms "
    "of the findings and, with --pages, of the pages.",
)
@config_option
@click.option(
    "--drain-s",
    default=0.0,
    show_default=True,
    help="Keep ticking this many simulated seconds after the last event (late deadlines).",
)
@click.option(
    "--fail-on-miss",
    is_flag=True,
    help="Exit 1 when an incident is missed or a false alarm fires (judged on pages with --pages).",
)
def replay(
    events: Path,
    out: Path | None,
    pages_path: Path | None,
    rules_path: Path | None,
    truth: Path | None,
    config: Config,
    drain_s: float,
    fail_on_miss: bool,
) -> None:
    """Replay EVENTS.jsonl through the detectors at full speed, clocked by event time."""
    from paywatch.alerts.engine import AlertEngine
    from paywatch.alerts.rules import RulesError, load_rules
    from paywatch.app.backtest import describe, encode_page, pages_of, score_pages
    from paywatch.detectors.engine import DetectionEngine
    from paywatch.detectors.replay import ReplayStats
    from paywatch.detectors.replay import replay as run
    from paywatch.detectors.scoring import score
    from paywatch.finding import encode_finding
    from paywatch.truth import read_truth

    if out is None and pages_path is None:
        raise click.UsageError("say where to write: --out FINDINGS.jsonl, --pages PAGES.jsonl, or both")
    try:
        rules = load_rules(rules_path or config.alerts.rules_file)
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    stats = ReplayStats()

    def reject(number: int, reason: str) -> None:
        click.echo(f"{events}:{number}: rejected: {reason}", err=True)

    findings, pages = [], []
    with ExitStack() as files:
        src = files.enter_context(events.open("rb"))
        found = run(src, DetectionEngine(config.detectors), stats, drain_s=drain_s, on_reject=reject)
        findings_out = files.enter_context(out.open("wb")) if out else None
        pages_out = files.enter_context(pages_path.open("wb")) if pages_path else None
        for finding, caused in pages_of(found, AlertEngine(rules)):
            findings.append(finding)
            if findings_out:
                findings_out.write(encode_finding(finding) + b"\n")
            for page in caused:
                pages.append(page)
                if pages_out:
                    pages_out.write(encode_page(page) + b"\n")
    written = " → ".join(str(p) for p in (out, pages_path) if p)
    click.echo(
        f"{stats.events} events, {stats.findings} findings, {len(pages)} pages, "
        f"{len(stats.rejected)} rejected lines → {written}",
        err=True,
    )
    if truth is None:
        return
    incidents = read_truth(truth.read_bytes().splitlines())
    judged = [("findings", score(findings, incidents))]
    if pages_path:
        judged.append(("pages", score_pages(pages, incidents, rules, findings)))
    for what, result in judged:
        click.echo(f"— {what}")
        for o in result.outcomes:
            verb = "recovered" if o.recovery else "caught"
            status = f"{verb} after {o.delay_s:.1f} s" if o.caught else "MISSED"
            click.echo(f"{o.incident:<12} {o.kind:<28} {o.subject:<16} {status}")
        click.echo(
            f"recall {result.caught}/{result.incidents} ({result.recall:.0%}), "
            f"false {'pages' if what == 'pages' else 'incidents'} {len(result.false_incidents)}"
        )
        for alarm in result.false_incidents:
            if what == "pages":
                click.echo(f"  false: {describe(alarm)}")
            else:
                click.echo(
                    f"  false: {alarm.timestamp.isoformat()} {alarm.finding.fingerprint} {alarm.finding.summary}"
                )
    final = judged[-1][1]
    if fail_on_miss and (final.missed or final.false_incidents):
        sys.exit(1)
