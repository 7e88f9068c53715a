"""The `paywatch` command. Subcommands live with the stage they run and are imported only
when invoked, so `paywatch --help` stays fast and one stage's dependencies never slow another.

Every subcommand runs inside `LazyGroup.invoke`, which turns the mistakes and outages a user
can fix (a server down, a missing file, a port in use, a bad config) into one line on stderr
and a non-zero exit, instead of a traceback. A bug still shows its traceback."""

from __future__ import annotations

import errno
import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from paywatch.app.config import Config

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "collect": "paywatch.app.collect:collect",
    "relay-otlp": "paywatch.app.relay_otlp:relay_otlp",
    "detect": "paywatch.app.detect:detect",
    "replay": "paywatch.app.replay:replay",
    "alert": "paywatch.app.alert:alert",
    "compensate": "paywatch.app.compensate:compensate",
    "simulate": "paywatch.app.simulate:simulate",
    "run": "paywatch.app.run:run",
    "demo": "paywatch.app.run:demo",
    "orders": "paywatch.app.history:orders",
    "alerts": "paywatch.app.history:alerts",
    "incidents": "paywatch.app.history:incidents",
    "dashboards": "paywatch.app.dashboards:dashboards",
    "devstack": "paywatch.app.devstack:devstack",
    "schema": "paywatch.app.schema:schema",
    "config-docs": "paywatch.app.config_docs:config_docs",
}


def _reason(exc: BaseException) -> str:
    """The innermost human part of a network error: "Connection refused", "timed out"."""
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if found:
        return found[-1].strip()
    return "timed out" if "timeout" in type(exc).__name__.lower() else str(exc).splitlines()[0][:200]


# librdkafka's names for "no broker answered": only these get the hint to start one.
_KAFKA_UNREACHABLE = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_RESOLVE", "_MSG_TIMED_OUT"}


def user_error(exc: BaseException) -> str | None:
    """One line saying what is wrong and what to do, for errors the user can fix; None for bugs."""
    from paywatch.settings import ConfigError

    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, ConfigError):
        return str(exc)
    if module == "elastic_transport" and type(exc).__name__ in ("ConnectionError", "ConnectionTimeout"):
        return (
            f"cannot reach Elasticsearch ({_reason(exc)}): start it (`paywatch devstack up elasticsearch`) "
            "or set elasticsearch.url in the config"
        )
    if module == "elasticsearch" and hasattr(exc, "status_code"):
        return f"Elasticsearch refused the request ({exc.status_code}): {getattr(exc, 'message', exc)}"
    if module == "niquests" and type(exc).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout"):
        url = getattr(getattr(exc, "request", None), "url", "") or ""
        base = url.split("/api/", 1)[0]
        return f"cannot reach Grafana at {base} ({_reason(exc)}): start it or pass --grafana URL"
    if module == "httpx" and type(exc).__name__ in (
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "RemoteProtocolError",
    ):
        return f"cannot reach {exc.request.url} ({_reason(exc)}): is the server running at that address?"  # type: ignore[attr-defined]
    if module == "cimpl" or type(exc).__name__ == "KafkaException":
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        if getattr(error, "name", lambda: "")() not in _KAFKA_UNREACHABLE:
            return f"Kafka: {text}"
        return f"Kafka: {text}: start it (`paywatch devstack up kafka`) or set kafka.bootstrap_servers in the config"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            "a port paywatch must listen on is already in use: stop the process holding it, or set another "
            "port in the config (embedded.listen_port, collector.metrics_port)"
        )
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    return None


def _load_config(ctx: click.Context, param: click.Parameter, path: Path | None) -> Config:
    from paywatch.app.config import load_config
    from paywatch.settings import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:  # a missing, unreadable or invalid file: one line, exit 1
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_load_config,
    help="paywatch YAML config (default: $PAYWATCH_CONFIG, else built-in defaults).",
)
"""`--config FILE` on every command: the command receives the loaded `Config`, never a path, so
every command reads the file the same way and reports a bad one the same way."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = user_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=LazyGroup, epilog="Example: paywatch demo && paywatch incidents")
@click.version_option(package_name="paywatch")
def main() -> None:
    """paywatch: catch stuck paid orders, duplicate charges, failing channels and silent services.

    \b
    Try it in two minutes, on one machine:
      paywatch demo                  # replay a callback outage, detect it, write report.html
      paywatch incidents             # what it found (reads the demo's database)
    """


if __name__ == "__main__":
    main()
