"""`paywatch alert`: the alert process (paywatch/alerts/runtime.py) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import threading

import click

from paywatch.alerts.runtime import build_stage
from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.stage import stop_on_signals


@click.command(epilog="Example: paywatch alert --config paywatch.yaml")
@config_option
@click.option("--max-seconds", type=float, default=None, help="Stop after this many seconds (demos, tests).")
def alert(config: Config, max_seconds: float | None) -> None:
    """Turn findings into pages for on-call: Alertmanager, webhook, Slack, PagerDuty and the log."""
    try:
        stage = build_stage(config.alerts, config, config.kibana.url)
    except ValueError as exc:  # a bad rules file, a sink without its secret
        raise click.ClickException(str(exc)) from None
    stop_on_signals(stage.stop)
    if max_seconds:
        timer = threading.Timer(max_seconds, stage.stop.set)
        timer.daemon = True  # a SIGTERM before it fires must not wait for it
        timer.start()
    try:
        stage.run()
    finally:
        stage.handler.close()
