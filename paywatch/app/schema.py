"""`paywatch schema`: print or write the published JSON Schemas of the contract."""

from __future__ import annotations

import json
from pathlib import Path

import click

from paywatch import contract, finding

SCHEMAS = {"event": contract.json_schema, "finding": finding.json_schema}


def render(name: str) -> str:
    return json.dumps(SCHEMAS[name](), indent=2, sort_keys=True) + "\n"


@click.group(epilog="Example: paywatch schema export schemas")
def schema() -> None:
    """JSON Schemas of events and findings."""


@schema.command("export", epilog="Example: paywatch schema export schemas")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default="schemas")
def export(directory: Path) -> None:
    """Write <name>.schema.json for every contract document into DIRECTORY."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SCHEMAS:
        (directory / f"{name}.schema.json").write_text(render(name))
        click.echo(f"wrote {directory / f'{name}.schema.json'}")
