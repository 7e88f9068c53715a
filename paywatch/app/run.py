"""`paywatch run --embedded` and `paywatch demo`: the embedded backend's commands."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from paywatch.app.cli import config_option
from paywatch.app.config import Config
from paywatch.app.embedded.settings import DEMO_DIR


@click.command(
    epilog="\b\nExamples:\n  paywatch demo                      # 20 simulated minutes in about a minute\n"
    "  paywatch demo --speed 0 --seed 3   # as fast as possible, another story"
)
@click.option("--seed", default=7, show_default=True, help="Same seed, same story, same findings.")
@click.option(
    "--duration", default="20m", show_default=True, help="Simulated time, at least 17m (the story's last incident)."
)
@click.option("--speed", default=20.0, show_default=True, help="Simulated seconds per wall second; 0 = flat out.")
@click.option("--out", "out_dir", default=DEMO_DIR, show_default=True, type=click.Path(file_okay=False, path_type=Path))
def demo(seed: int, duration: str, speed: float, out_dir: Path) -> None:
    """Replay a callback outage, a failing bank and a dead compensation job; score what paywatch caught."""
    from paywatch.app.demo import check_duration, print_summary, run_demo
    from paywatch.logs import configure_logging

    problem = check_duration(duration)
    if problem:
        raise click.BadParameter(problem, param_hint="--duration")
    configure_logging(level="error")  # the live view is the output; alerts are in the store and the report
    console = Console()
    result = run_demo(out_dir, seed=seed, duration=duration, speed=speed, console=console)
    print_summary(result, console)
    if not result.ok:
        raise click.ClickException("the demo missed an injected incident or raised a false one (see above)")


@click.command(epilog="Example: PAYWATCH_INGEST_TOKEN=$(openssl rand -hex 16) paywatch run --embedded")
@click.option("--embedded", is_flag=True, required=True, help="Run every stage in this one process (SQLite).")
@config_option
def run(embedded: bool, config: Config) -> None:
    """Run paywatch on one machine: HTTP ingest, detectors, alerts, compensation, SQLite."""
    from paywatch.app.embedded.runtime import run_embedded

    run_embedded(config)
