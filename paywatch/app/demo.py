"""`paywatch demo`: a payments incident, replayed on the embedded stack in two minutes.

The simulator plays 20 minutes of a platform's payments — normal traffic, then a callback
outage on one channel (customers re-pay, some are charged twice), a bank failing and
recovering, and the platform's own compensation job dying — compressed in time. Its
events go over HTTP to the embedded ingest endpoint, exactly as a service's SDK would
send them; paywatch detects, alerts, and queries the channels' (fake, local) query APIs
for the truth. At the end it scores itself against the simulator's ground truth and
writes an HTML incident report.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from paywatch.app.config import Config
from paywatch.app.embedded.ingest import IngestServer
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.settings import DEMO_DATABASE, DEMO_DIR
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.app.report import CaughtIncident, ReportInput, render
from paywatch.clock import ManualClock
from paywatch.compensation.driver import CompensationDriver
from paywatch.compensation.settings import BudgetSettings, ChannelQuerySettings, CompensationSettings
from paywatch.contract import Event, encode
from paywatch.detectors.scoring import Score, score
from paywatch.finding import Finding, holds_open, is_incident
from paywatch.intake import Intake
from paywatch.simulator.channel_api import ChannelApiServer, merchant_keypair
from paywatch.simulator.settings import SimulatorSettings

STORY = (
    "normal",
    "callback_outage:channel=alipay,start=5m,duration=7m",
    "channel_down:channel=bank_b,start=8m,duration=3m,rate=3",
    "service_dies:service=compensation-job,start=14m",
)
# Which simulated channels expose a query API, and in which provider's shape. unionpay and
# bank_b are callback-only: paywatch must say it cannot check them, not pretend to.
QUERY_APIS = {"wechatpay": "wechatpay", "alipay": "alipay", "bank_a": "stripe"}
CALLBACK_ONLY = ("unionpay", "bank_b")
STRIPE_KEY = "sk_test_" + "demo" * 6
# The compensation job dies at 14m; its silence is declared down a heartbeat grace later, and
# the earlier incidents need their recoveries seen: a shorter run scores incidents it cut short.
MIN_DURATION_S = 17 * 60
# A mid-sized platform's peak: enough stuck orders for the story, while every compensating
# query is still really signed (RSA-2048) and answered within the compressed time.
DEMO_PEAK_ORDERS_PER_S = 8.0


@dataclass
class DemoResult:
    score: Score
    findings: list[Finding]
    events: int
    wall_s: float
    report: Path
    database: Path
    alerts_fired: list[str] = field(default_factory=list)
    queries: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.score.missed and not self.score.false_incidents


def demo_config(out_dir: Path, channel_urls: dict[str, str]) -> Config:
    """Embedded defaults, with the fake channels' query APIs and no external pager."""
    config = Config()
    config.embedded.database = out_dir / DEMO_DATABASE.name
    config.alerts.alertmanager.urls = []  # the demo pages to the log and the store; point it at one with --config
    config.alerts.self_monitor.watchdog = False
    channels = {
        name: ChannelQuerySettings(adapter=provider, base_url=channel_urls[name])  # type: ignore[arg-type]
        for name, provider in QUERY_APIS.items()
    }
    channels |= {name: ChannelQuerySettings(adapter="none") for name in CALLBACK_ONLY}
    # Local fakes answer in microseconds; a real bank's budget would be far lower.
    config.compensation = CompensationSettings(channels=channels, budget=BudgetSettings(qps=200, concurrency=16))
    return config


def _per_second(events: Iterator[Event]) -> Iterator[tuple[datetime, list[Event]]]:
    """Group the simulation's event-time-ordered stream into one batch per simulated second."""
    batch: list[Event] = []
    second: datetime | None = None
    for event in events:
        at = event.timestamp.replace(microsecond=0)
        if second is not None and at > second:
            yield second + timedelta(seconds=1), batch
            batch = []
        second = at if second is None or at > second else second
        batch.append(event)
    if second is not None:
        yield second + timedelta(seconds=1), batch


class LiveView:
    """What an SRE would glance at: throughput, open findings, alerts firing."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.open: dict[str, Finding] = {}
        self.fired: list[str] = []
        self.started = time.monotonic()
        self.sim_now: datetime | None = None

    def on_finding(self, finding: Finding) -> None:
        fp = finding.finding.fingerprint
        if holds_open(finding.finding.state, finding.finding.level):
            self.open[fp] = finding
        else:
            self.open.pop(fp, None)

    def render(self) -> Group:
        wall = time.monotonic() - self.started
        head = Table.grid(padding=(0, 3))
        head.add_row(
            f"simulated time [bold]{self.sim_now:%H:%M:%S}[/]" if self.sim_now else "",
            f"wall {wall:5.1f}s",
            f"events {self.pipeline.events_in:,} ({self.pipeline.events_in / max(wall, 0.1):,.0f}/s)",
        )
        kinds = Counter(f.finding.kind for f in self.open.values())
        findings = Table("open findings", "count", box=None)
        for kind, count in sorted(kinds.items()):
            style = "bold red" if kind.endswith("incident") or kind in ("service_down", "channel_health") else ""
            findings.add_row(f"[{style}]{kind}[/]" if style else kind, str(count))
        alerts = Table("alerts firing", "since", box=None)
        for alert in self.pipeline.alerting.engine.active():
            if alert.status == "firing":
                summary = alert.annotations.get("summary", alert.name)
                alerts.add_row(summary[:100], f"{alert.starts_at:%H:%M:%S}")
        return Group(head, findings, alerts)


def check_duration(duration: str) -> str | None:
    """Why `duration` cannot tell the whole story, or None."""
    from paywatch.simulator.scenarios import ScenarioError, parse_duration

    try:
        seconds = parse_duration(duration)
    except ScenarioError as exc:
        return str(exc)
    if seconds < MIN_DURATION_S:
        return f"{duration} is too short: the story's incidents need at least {MIN_DURATION_S // 60}m"
    return None


def run_demo(
    out_dir: Path,
    seed: int = 7,
    duration: str = "20m",
    speed: float = 20.0,
    console: Console | None = None,
    peak_orders_per_s: float = DEMO_PEAK_ORDERS_PER_S,
) -> DemoResult:
    from paywatch.simulator import simulate

    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    database = out_dir / DEMO_DATABASE.name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    run = simulate(STORY, seed=seed, duration=duration, settings=SimulatorSettings(peak_orders_per_s=peak_orders_per_s))
    clock = ManualClock(run.sim.start)
    private, public = merchant_keypair()
    platform = merchant_keypair()  # the fake channels sign their answers with it; paywatch verifies each
    os.environ.update(PAYWATCH_WECHATPAY_PRIVATE_KEY=private, PAYWATCH_ALIPAY_PRIVATE_KEY=private)
    os.environ.update(PAYWATCH_WECHATPAY_PLATFORM_KEY=platform[1], PAYWATCH_ALIPAY_PUBLIC_KEY=platform[1])
    os.environ["PAYWATCH_STRIPE_SECRET_KEY"] = STRIPE_KEY
    token = secrets.token_urlsafe(24)
    wall_start = time.monotonic()
    with ExitStack() as stack:
        servers = {}
        for channel, provider in QUERY_APIS.items():
            auth = {"secret_key": STRIPE_KEY} if provider == "stripe" else {"public_key": public}
            server = ChannelApiServer(provider, run.truth.lookup(channel, clock), platform_key=platform, **auth)  # type: ignore[arg-type]
            servers[channel] = stack.enter_context(server)
        config = demo_config(out_dir, {name: s.url for name, s in servers.items()})
        store = SqliteStore(database, clock=clock)
        stack.callback(store.close)
        pipeline = Pipeline(config, store, started_at=clock.now())
        # A simulated second waits for its queries' answers, as a live second would have.
        pipeline.compensation = CompensationDriver(config.compensation, "demo", wait_s=60.0)
        stack.callback(pipeline.compensation.close)
        findings: list[Finding] = []
        view = LiveView(pipeline)
        pipeline.listeners += [findings.append, view.on_finding]
        limit = config.embedded.max_body_bytes
        ingest = IngestServer(
            pipeline.ingest, store, token, "127.0.0.1", 0, limit, Intake(config.intake), pan=config.pan
        )
        ingest.start()
        stack.callback(ingest.stop)
        http = stack.enter_context(httpx.Client(base_url=ingest.url, headers={"Authorization": f"Bearer {token}"}))
        live = stack.enter_context(Live(view.render(), console=console, refresh_per_second=4, transient=False))
        sim_start = None
        for second, batch in _per_second(iter(run)):
            sim_start = sim_start or second
            clock.set(second)
            reply = http.post("/v1/events", content=b"\n".join(encode(e) for e in batch))
            if reply.status_code != 200:
                raise RuntimeError(f"ingest refused simulator events: {reply.status_code} {reply.text[:300]}")
            pipeline.tick(second)
            view.sim_now = second
            live.update(view.render())
            if speed > 0:  # pace to `speed`× real time, so the story can be watched
                ahead = (second - sim_start).total_seconds() / speed - (time.monotonic() - wall_start)
                if ahead > 0:
                    time.sleep(ahead)
        fired = [a.name for a in pipeline.alerting.engine.active() if a.status == "firing"]
        result_score = score(findings, run.incidents)
        queries = Counter(
            d["event"]["outcome"] for d in store.documents("paywatch.action") if d["event"].get("action") == "query"
        )
        caught = _caught(result_score, run.incidents)
        notes = {
            "story": "; ".join(STORY),
            "seed": str(seed),
            "simulated": f"{duration} in {time.monotonic() - wall_start:.0f} s of wall clock",
            "events": f"{pipeline.events_in:,}",
        }
        report = render(ReportInput("paywatch demo: incident report", store, caught, notes), out_dir / "report.html")
    return DemoResult(
        result_score, findings, pipeline.events_in, time.monotonic() - wall_start, report, database, fired, queries
    )


def _caught(result: Score, incidents: list) -> list[CaughtIncident]:
    rows = []
    for inc in incidents:
        outcomes = [o for o in result.outcomes if o.incident == inc.id and not o.recovery]
        delays = [o.delay_s for o in outcomes if o.delay_s is not None]
        rows.append(
            CaughtIncident(
                inc.id,
                inc.scenario,
                inc.start,
                inc.end,
                bool(outcomes) and all(o.caught for o in outcomes),
                min(delays) if delays else None,  # the first finding: when paywatch knew
                ", ".join(f"{o.kind} on {o.subject}" for o in outcomes),
                detect_from=inc.detect_from,
                kinds=tuple(dict.fromkeys(o.kind for o in outcomes)),
                subjects=tuple(dict.fromkeys(o.subject for o in outcomes if o.subject != "*")),
            )
        )
    return rows


def print_summary(result: DemoResult, console: Console) -> None:
    table = Table(
        "incident",
        "expected finding",
        "on",
        "caught",
        "delay",
        title="What paywatch caught",
        caption="delay: from when the events first made it detectable to the first finding "
        "(recovery: from the incident's end); report.html has delays from its start and to the first page",
    )
    for o in result.score.outcomes:
        delay = "—" if o.delay_s is None else f"{o.delay_s:.1f} s"
        label = f"{o.kind} (recovery)" if o.recovery else o.kind
        table.add_row(o.incident, label, o.subject, "[green]yes[/]" if o.caught else "[red]MISSED[/]", delay)
    console.print(table)
    false = [f"{f.finding.kind} {f.finding.summary}" for f in result.score.false_incidents if is_incident(f)]
    console.print(f"false incident alerts: [bold]{len(false)}[/]")
    for line in false[:10]:
        console.print(f"  [red]{line}[/]")
    console.print(f"compensating queries by outcome: {dict(result.queries)}")
    console.print(f"{result.events:,} events in {result.wall_s:.0f} s; database {result.database}")
    console.print(f"incident report: [bold]{result.report}[/]")
    database = "" if result.database.parent.resolve() == DEMO_DIR.resolve() else f" --database {result.database}"
    console.print(f"look around: paywatch incidents{database}; paywatch alerts list{database}")
