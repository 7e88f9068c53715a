"""Every `paywatch` command, driven the way a new operator gets it wrong: a flag that does not
exist, a missing file, a server that is down, a port already taken, a bad duration. Each must
answer with one line saying what is wrong and exit non-zero, never with a Python traceback.
Run as real subprocesses of the installed `paywatch` entry point (what a user runs)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import msgspec
import pytest

from paywatch.app.cli import main

PAYWATCH = str(Path(sys.executable).with_name("paywatch"))


def _commands() -> Iterator[tuple[str, ...]]:
    ctx = click.Context(main)

    def walk(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), (*path, name))  # type: ignore[arg-type]

    yield from walk(main, ())


COMMANDS = list(_commands())


def _run(
    args: list[str], cwd: Path, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PAYWATCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PAYWATCH_CONFIG": "", **(env or {})},
    )


def _one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, result.stderr
    for text in expected:
        assert text in error[0], error[0]


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    for name in path:
        cmd = cmd.get_command(click.Context(main), name)  # type: ignore[attr-defined]
    return cmd


CONFIGURED = [path for path in COMMANDS if any("--config" in param.opts for param in _command(path).params)]


def test_every_stage_command_takes_a_config() -> None:
    names = {" ".join(path) for path in CONFIGURED}
    assert {"collect", "relay-otlp", "detect", "replay", "alert", "compensate", "simulate", "run"} <= names
    assert {"dashboards export", "dashboards provision", "dashboards check", "orders show", "incidents"} <= names


@pytest.mark.parametrize("path", CONFIGURED, ids=" ".join)
def test_every_command_reports_a_bad_config_the_same_way(path: tuple[str, ...], tmp_path: Path) -> None:
    """One `--config` option and one loader: a missing file or an unknown key is the same one line
    and exit 1 on every command, before the command does anything else."""
    (tmp_path / "typo.yaml").write_text("kafak: {}\n")
    for name, expected in (("missing.yaml", "cannot read config missing.yaml"), ("typo.yaml", "kafak")):
        result = _run([*path, "--config", name], tmp_path)
        assert result.returncode == 1, result.stderr
        _one_clear_line(result, expected)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def down(tmp_path: Path, closed_port: int) -> Path:
    """A config whose Kafka, Elasticsearch, Grafana and Kibana are all down."""
    url = f"http://127.0.0.1:{closed_port}"
    (tmp_path / "down.yaml").write_text(
        f"backend: kafka\nkafka:\n  bootstrap_servers: 127.0.0.1:{closed_port}\n"
        f"elasticsearch:\n  url: {url}\n  request_timeout_s: 2\n"
        f"dashboards:\n  grafana_url: {url}\n  timeout_s: 2\nkibana:\n  url: {url}\n"
        f"collector:\n  metrics_port: null\nsdk:\n  spill_dir: {tmp_path / 'spool'}\n"
    )
    return tmp_path / "down.yaml"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "paywatch")
def test_every_help_has_an_example(path: tuple[str, ...], tmp_path: Path) -> None:
    result = _run([*path, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout, f"`paywatch {' '.join(path)} --help` shows no example"


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "paywatch")
def test_a_bad_flag_is_one_line_and_exit_2(path: tuple[str, ...], tmp_path: Path) -> None:
    result = _run([*path, "--no-such-flag"], tmp_path)
    assert result.returncode == 2
    _one_clear_line(result, "--no-such-flag")


@pytest.mark.parametrize(
    "args",
    [
        ["incidents", "--config", "missing.yaml"],
        ["alerts", "list", "--config", "missing.yaml"],
        ["orders", "show", "o1", "--config", "missing.yaml"],
        ["simulate", "--config", "missing.yaml"],
        ["dashboards", "check", "--config", "missing.yaml"],
        ["dashboards", "export", "out", "--config", "missing.yaml"],
        ["collect", "--config", "missing.yaml"],
        ["alert", "--config", "missing.yaml"],
        ["detect", "--config", "missing.yaml"],
        ["compensate", "--config", "missing.yaml"],
        ["run", "--embedded", "--config", "missing.yaml"],
        ["replay", "missing.jsonl", "--out", "findings.jsonl"],
        ["incidents", "--database", "missing.sqlite"],
        ["incidents"],  # no embedded database yet, and no demo's
        ["schema", "export", "/proc/no/such/dir"],
        ["dashboards", "docs", "no/such/dir/dashboards.md"],
        ["config-docs", "--out", "no/such/dir/configuration.md"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_missing_file_is_one_line(args: list[str], tmp_path: Path) -> None:
    _one_clear_line(_run(args, tmp_path))


def test_servers_down_are_one_line_each(down: Path, tmp_path: Path) -> None:
    """Elasticsearch, Grafana, Kibana and Kafka down: each command names the server and the fix."""
    cases = {
        ("incidents",): "Elasticsearch",
        ("alerts", "list"): "Elasticsearch",
        ("orders", "show", "o1"): "Elasticsearch",
        ("dashboards", "check"): "Elasticsearch",
        ("dashboards", "provision"): "Grafana",
        ("dashboards", "provision", "--skip-grafana"): "cannot reach http://127.0.0.1",
        ("simulate", "--kafka", "--duration", "10s"): "`paywatch devstack up kafka`",
        ("detect",): "`paywatch devstack up kafka`",
        ("compensate",): "`paywatch devstack up kafka`",
        ("alert",): "`paywatch devstack up kafka`",
    }
    env = {**os.environ, "PAYWATCH_CONFIG": str(down)}
    running = {
        args: subprocess.Popen(
            [PAYWATCH, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args in cases
    }
    for args, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        _one_clear_line(subprocess.CompletedProcess(args, process.returncode, stdout, stderr), cases[args])


def test_collect_waits_for_kafka_quietly(down: Path, tmp_path: Path) -> None:
    """The collector waits for its servers (compose starts them together); while it waits,
    librdkafka's own log goes through paywatch's logger, not hundreds of raw lines."""
    process = subprocess.Popen(
        [PAYWATCH, "collect", "--config", str(down)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr
    assert not [line for line in stderr.splitlines() if line.startswith("%")], "raw librdkafka lines"
    assert 1 <= len(stderr.splitlines()) <= 5, stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "busy.yaml").write_text(f"embedded:\n  listen_port: {port}\n  database: {tmp_path / 'e.sqlite'}\n")
        result = _run(["run", "--embedded", "--config", "busy.yaml"], tmp_path, env={"PAYWATCH_INGEST_TOKEN": "t" * 24})
    _one_clear_line(result, "already in use")


@pytest.mark.parametrize(
    ("args", "blamed"),
    [
        (["demo", "--duration", "5m"], "--duration"),  # the story needs 17 minutes
        (["demo", "--duration", "soon"], "--duration"),
        (["simulate", "--duration", "5x"], "--duration"),
        (["simulate", "-s", "no_such_scenario"], "--scenario"),
        (["dashboards", "check", "--since", "1w"], "--since"),
        (["incidents", "--limit", "0"], "--limit"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else a,
)
def test_a_bad_value_blames_its_own_option(args: list[str], blamed: str, tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 2
    _one_clear_line(result, blamed)


def _examples(path: tuple[str, ...]) -> list[list[str]]:
    """The `paywatch ...` lines of a command's help epilog, as argument lists."""
    import shlex

    command: click.Command = main
    ctx = click.Context(main)
    for name in path:
        command = command.get_command(ctx, name)  # type: ignore[attr-defined]
    out = []
    for line in (command.epilog or "").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part.split("#", 1)[0])
            if "paywatch" in words:  # after any VAR=value prefix
                out.append(words[words.index("paywatch") + 1 :])
    return out


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "paywatch")
def test_every_example_parses(path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An example that the command itself would reject is worse than none (files it names exist)."""
    monkeypatch.chdir(tmp_path)
    for name in ("paywatch.yaml", "events.jsonl", "truth.jsonl", "rules.yaml"):
        (tmp_path / name).write_text("")
    examples = _examples(path)
    assert examples, path
    for args in examples:
        command: click.Command = main
        ctx = main.make_context("paywatch", list(args))
        rest = [*ctx._protected_args, *ctx.args]
        while isinstance(command, click.Group) and rest:
            name, command, rest = command.resolve_command(ctx, rest)  # type: ignore[assignment]
            ctx = command.make_context(name, rest, parent=ctx)  # type: ignore[arg-type, union-attr]
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args]


def test_times_print_whole_as_iso_8601_utc_at_80_columns(tmp_path: Path) -> None:
    """`incidents` on a narrow terminal: every time whole, in UTC, whatever zone it was stored in;
    the demo's database is read when no embedded database exists yet."""
    from datetime import UTC, datetime

    from paywatch.app.embedded.settings import DEMO_DATABASE
    from paywatch.app.embedded.sqlite_store import SqliteStore
    from paywatch.clock import ManualClock
    from paywatch.finding import FindingPayment, make_finding

    database = tmp_path / DEMO_DATABASE
    database.parent.mkdir(parents=True)
    store = SqliteStore(database, clock=ManualClock(datetime(2026, 1, 15, tzinfo=UTC)))
    opened = make_finding(
        at=datetime.fromisoformat("2026-01-15T10:05:03.250+08:00"),
        kind="channel_health",
        state="open",
        level="down",
        fingerprint="channel_health:bank_b",
        severity="critical",
        summary="channel bank_b is down",
        payment=FindingPayment(channel="bank_b"),
    )
    store.write([msgspec.to_builtins(opened)])
    store.close()
    result = _run(["incidents"], tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "2026-01-15T02:05:03Z" in result.stdout
    assert f"reading the demo's database {DEMO_DATABASE}" in result.stderr


@pytest.mark.parametrize(
    ("embedded", "expected"),
    [
        ("listen_host: 192.0.2.1", "cannot listen on 192.0.2.1"),  # TEST-NET-1: no machine's address
        ("listen_host: no-such-host.invalid", "cannot listen on no-such-host.invalid"),
        ("max_body_bytes: 2000000\n  inflight_bytes: 1000", "inflight_bytes must be at least"),
    ],
    ids=["address not here", "unknown host", "budget under one body"],
)
def test_embedded_serving_mistakes_are_one_line(embedded: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(f"embedded:\n  database: {tmp_path / 'e.sqlite'}\n  {embedded}\n")
    result = _run(["run", "--embedded", "--config", "bad.yaml"], tmp_path, env={"PAYWATCH_INGEST_TOKEN": "t" * 24})
    _one_clear_line(result, expected)


def test_run_needs_embedded_and_a_token(tmp_path: Path) -> None:
    _one_clear_line(_run(["run"], tmp_path), "--embedded")
    env = {"PAYWATCH_INGEST_TOKEN": ""}
    (tmp_path / "e.yaml").write_text(f"embedded:\n  database: {tmp_path / 'e.sqlite'}\n")
    _one_clear_line(_run(["run", "--embedded", "--config", "e.yaml"], tmp_path, env=env), "no ingest token")


def test_simulating_into_an_unreachable_ingest_is_one_line(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1/events"
    args = ["simulate", "--ingest", url, "--duration", "10s", "--give-up-after", "2"]
    _one_clear_line(_run(args, tmp_path, env={"PAYWATCH_INGEST_TOKEN": "t" * 24}), "http ingest")
