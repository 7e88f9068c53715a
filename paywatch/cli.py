"""The `paywatch` command. Subcommands live with the stage they run and are imported only
when invoked, so `paywatch --help` stays fast and one stage's dependencies never slow another."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "collect": "paywatch.collectors.cli:collect",
    "relay-otlp": "paywatch.collectors.otlp_relay:relay_otlp",
    "detect": "paywatch.detectors.cli:detect",
    "replay": "paywatch.app.cli:replay",
    "alert": "paywatch.alerts.cli:alert",
    "compensate": "paywatch.compensation.cli:compensate",
    "simulate": "paywatch.simulator.cli:simulate",
    "run": "paywatch.embedded.cli:run",
    "demo": "paywatch.embedded.cli:demo",
    "orders": "paywatch.embedded.cli:orders",
    "alerts": "paywatch.embedded.cli:alerts",
    "incidents": "paywatch.embedded.cli:incidents",
    "dashboards": "paywatch.dashboards.cli:dashboards",
    "devstack": "paywatch.devstack_cli:devstack",
    "schema": "paywatch.schema_cli:schema",
    "config-docs": "paywatch.config_docs:config_docs",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="paywatch")
def main() -> None:
    """paywatch: catch stuck paid orders, duplicate charges, failing channels and silent services."""


if __name__ == "__main__":
    main()
