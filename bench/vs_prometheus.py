"""Time to page, side by side: paywatch vs Prometheus + Alertmanager on the same incidents, in real time.

    .venv/bin/python bench/vs_prometheus.py [--quick] [--warmup 120] [--incident 200]

The simulator plays normal payment traffic on the wall clock, then at one moment (the onset)
three incidents begin together: a channel going down (bank_b fails 90% of attempts), a
callback outage (alipay's payment results stop being applied: paid but pending) and a silent
service (every compensation-job instance dies). The same events are

* fed to paywatch (the embedded pipeline, in this process), which pages Alertmanager itself;
* counted as Prometheus metrics by the simulated service instances, one scrape target per
  instance (attempts by channel and outcome, callbacks, orders paid), scraped by a real
  Prometheus with the rules an SRE would write, which pages Alertmanager too. A dying instance's
  target stops answering (`up` 0); a planned stop (a `stopping` heartbeat) removes the target.

Two Prometheus servers run at once on the same targets: one with the default intervals (scrape
15 s, evaluation 15 s, `for: 1m`, Alertmanager `group_wait: 30s`) and one aggressive (5 s / 5 s /
`for: 0s` / `group_wait: 0s`), each with its own real Alertmanager; paywatch sends every page to
both Alertmanagers, so each comparison shares one Alertmanager and its settings. For each
incident the bench prints when each stack's alert reached Alertmanager and when Alertmanager
delivered the page (its webhook receiver), counted from the onset; and every page that belongs
to no incident (false pages), over the normal traffic before the onset and on the untouched
channels and services after it. Prometheus and Alertmanager are Debian's packages, found or
installed (apt-get) as `.ci/run` does, started on free loopback ports with their own temp dirs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, start_http_server

from paywatch.app.config import Config
from paywatch.app.demo import _per_second
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.contract import HEARTBEAT, Event
from paywatch.detectors.settings import ChannelSettings, DetectorSettings
from paywatch.devstack import AlertmanagerServer, PrometheusServer, alertmanager_binary, free_port, prometheus_binary
from paywatch.simulator import simulate
from paywatch.simulator.model import CHANNELS
from paywatch.simulator.settings import SimulatorSettings

DOWN_CHANNEL, OUTAGE_CHANNEL, DEAD_SERVICE = "bank_b", "alipay", "compensation-job"
# paywatch's grace before an unapplied payment counts as paid-but-pending. This business applies
# a payment result in ~120 ms (p99.99 about 1 s); the shipped default, 60 s, suits slower ones.
PAID_GRACE_S = 10.0
CUSTOMER_FAILURES = frozenset({"user", "limit"})


@dataclass(frozen=True)
class Profile:
    """One Prometheus + Alertmanager setup; the rule windows follow the intervals."""

    name: str
    scrape: str
    evaluation: str
    for_: str
    group_wait: str
    ratio_window: str
    increase_window: str

    def describe(self) -> str:
        return (
            f"scrape {self.scrape}, evaluation {self.evaluation}, for: {self.for_}, group_wait: {self.group_wait}; "
            f"failure ratio over rate[{self.ratio_window}], "
            f"callbacks - orders paid over increase[{self.increase_window}]"
        )


PROFILES = (
    Profile("default", "15s", "15s", "1m", "30s", "2m", "5m"),
    Profile("aggressive", "5s", "5s", "0s", "0s", "1m", "1m"),
)


def prometheus_rules(profile: Profile, services: list[str]) -> str:
    """What an SRE would write for these three incidents, from the metrics the services expose."""
    w, iw, f = profile.ratio_window, profile.increase_window, profile.for_
    absent = "".join(
        f"""
      - alert: ServiceAbsent
        expr: absent(up{{job="services",service="{s}"}})
        for: {f}
        labels: {{severity: critical, service: {s}}}"""
        for s in services
    )
    return f"""groups:
  - name: payments
    rules:
      - alert: ChannelFailureRatioHigh
        expr: |
          (sum by (channel) (rate(payment_attempts_total{{outcome="failure"}}[{w}]))
            / sum by (channel) (rate(payment_attempts_total[{w}]))) > 0.25
          and sum by (channel) (rate(payment_attempts_total[{w}])) > 0.1
        for: {f}
        labels: {{severity: critical}}
      - alert: CallbacksNotApplied
        expr: |
          sum by (channel) (increase(payment_callbacks_total{{outcome="success"}}[{iw}]))
            - sum by (channel) (increase(orders_paid_total[{iw}])) > 20
        for: {f}
        labels: {{severity: critical}}
      - alert: ServiceDown
        expr: sum by (service) (up{{job="services"}}) == 0
        for: {f}
        labels: {{severity: critical}}{absent}
"""


def prometheus_config(profile: Profile, targets: Path, alertmanager_port: int) -> str:
    return f"""global:
  scrape_interval: {profile.scrape}
  evaluation_interval: {profile.evaluation}
  external_labels: {{monitor: prometheus}}
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{alertmanager_port}']
scrape_configs:
  - job_name: services
    file_sd_configs:
      - files: ['{targets}']
        refresh_interval: 5s
"""


def alertmanager_config(profile: Profile, webhook: str) -> str:
    """One route for both stacks, with the profile's group_wait. Where that is not 0s, paywatch's
    alerts also go, unchanged, to a second receiver without group_wait (`<profile>-own`): they are
    one alert per incident already, so that is how paywatch's pages would be routed."""
    own = ""
    if profile.group_wait != "0s":
        own = """
  routes:
    - matchers: ['monitor!="prometheus"']
      receiver: own
      group_wait: 0s
      continue: true
    - receiver: oncall"""
    return f"""route:
  receiver: oncall
  group_by: [alertname, monitor, channel, service]
  group_wait: {profile.group_wait}
  group_interval: 5m
  repeat_interval: 4h{own}
receivers:
  - name: oncall
    webhook_configs:
      - url: '{webhook}/{profile.name}'
        send_resolved: false
  - name: own
    webhook_configs:
      - url: '{webhook}/{profile.name}-own'
        send_resolved: false
"""


# ---------------------------------------------------------------- the simulated services' metrics


class Instance:
    """One service instance's /metrics endpoint: what Prometheus scrapes."""

    def __init__(self, service: str, instance_id: str) -> None:
        self.service, self.instance_id = service, instance_id
        registry = CollectorRegistry()
        self.attempts = Counter(
            "payment_attempts", "Payment attempts by result", ["channel", "outcome"], registry=registry
        )
        self.callbacks = Counter("payment_callbacks", "Channel callbacks", ["channel", "outcome"], registry=registry)
        self.paid = Counter("orders_paid", "Orders the business recorded as paid", ["channel"], registry=registry)
        for channel in CHANNELS:  # every series exists from the start, so increase() sees the first event
            for outcome in ("success", "failure", "declined", "pending"):
                self.attempts.labels(channel, outcome)
            self.callbacks.labels(channel, "success")
            self.paid.labels(channel)
        self.server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.port = self.server.server_address[1]
        self.alive = True

    def observe(self, event: Event) -> None:
        action, p = event.event.action, event.payment
        if p is None or p.channel is None:
            return
        if action == "payment_requested":
            outcome = event.event.outcome
            if outcome == "failure":
                outcome = "declined" if p.error_category in CUSTOMER_FAILURES else "failure"
            elif outcome != "success":
                outcome = "pending"
            self.attempts.labels(p.channel, outcome).inc()
        elif action == "channel_callback" and event.event.outcome == "success":
            self.callbacks.labels(p.channel, "success").inc()
        elif action == "order_paid":
            self.paid.labels(p.channel).inc()

    def stop(self) -> None:
        """The process is gone: its port refuses connections."""
        if self.alive:
            self.server.shutdown()
            self.server.server_close()
            self.alive = False


class Services:
    """Every simulated instance and the file_sd targets file both Prometheus servers watch."""

    def __init__(self, targets: Path) -> None:
        self.targets = targets
        self.instances: dict[str, Instance] = {}
        self.planned_stops: set[str] = set()
        self._write()

    def get(self, event: Event) -> Instance | None:
        key = event.service.instance.id if event.service.instance else event.service.name
        inst = self.instances.get(key)
        if inst is None and key not in self.planned_stops:
            inst = self.instances[key] = Instance(event.service.name, key)
            self._write()
        return inst

    def observe(self, events: list[Event]) -> None:
        for event in events:
            inst = self.get(event)
            if inst is None:
                continue
            if event.event.dataset == HEARTBEAT and event.heartbeat and event.heartbeat.status == "stopping":
                inst.stop()  # a planned stop: the orchestrator removes the target
                self.planned_stops.add(inst.instance_id)
                del self.instances[inst.instance_id]
                self._write()
            else:
                inst.observe(event)

    def kill(self, service: str) -> None:
        """Crash every instance of `service`: its targets stay listed and stop answering (`up` 0)."""
        for inst in self.instances.values():
            if inst.service == service:
                inst.stop()

    def _write(self) -> None:
        groups = [
            {"targets": [f"127.0.0.1:{i.port}"], "labels": {"service": i.service, "instance_id": i.instance_id}}
            for i in self.instances.values()
        ]
        tmp = self.targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets)  # atomic: Prometheus never reads half a file

    def close(self) -> None:
        for inst in self.instances.values():
            inst.stop()


# ---------------------------------------------------------------- what reached Alertmanager, and when


@dataclass
class Seen:
    """First time each alert (profile, stack, alertname, subject) reached Alertmanager / was paged."""

    arrived: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    paged: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, table: dict, profile: str, labels: dict[str, str], at: float) -> None:
        key = (profile, stack_of(labels), labels.get("alertname", ""), subject_of(labels))
        with self.lock:
            table.setdefault(key, at)


def stack_of(labels: dict[str, str]) -> str:
    return "prometheus" if labels.get("monitor") == "prometheus" else "paywatch"


def subject_of(labels: dict[str, str]) -> str:
    return labels.get("channel") or labels.get("service") or ""


def incident_of(alertname: str, subject: str) -> str | None:
    """Which injected incident a page is about; None: a false page."""
    if subject == DOWN_CHANNEL:
        return "channel down"
    if subject == OUTAGE_CHANNEL or (not subject and alertname in ("PaidButPending", "DuplicateCharge")):
        return "callback outage"
    if subject == DEAD_SERVICE:
        return "silent service"
    return None


INCIDENTS = ("channel down", "callback outage", "silent service")


def webhook_server(seen: Seen) -> ThreadingHTTPServer:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.time()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            for alert in body.get("alerts", []):
                if alert.get("status") == "firing":
                    seen.note(seen.paged, self.path.strip("/"), alert["labels"], at)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def watch_alertmanagers(ams: dict[str, AlertmanagerServer], seen: Seen, stop: threading.Event) -> None:
    """Poll each Alertmanager for the alerts it holds: when each first arrived (before group_wait)."""
    with httpx.Client(timeout=5) as http:
        while not stop.wait(0.25):
            for profile, am in ams.items():
                try:
                    alerts = http.get(f"{am.url}/api/v2/alerts").json()
                except httpx.HTTPError:
                    continue
                at = time.time()
                for alert in alerts:
                    seen.note(seen.arrived, profile, alert["labels"], at)


# ---------------------------------------------------------------- the run


def wait_scraped(proms: dict[str, PrometheusServer], n: int, timeout: float = 60) -> None:
    """Until every Prometheus has scraped all n targets and evaluated its rules after that."""
    deadline = time.monotonic() + timeout
    for prom in proms.values():
        while time.monotonic() < deadline:
            r = httpx.get(f"{prom.url}/api/v1/query", params={"query": 'count(up{job="services"} == 1)'}, timeout=5)
            result = r.json()["data"]["result"]
            if result and int(float(result[0]["value"][1])) >= n:
                break
            time.sleep(0.5)
    time.sleep(max(float(p.scrape.rstrip("s")) for p in PROFILES) + 1)  # one evaluation after the scrape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds of normal traffic before the onset")
    ap.add_argument("--incident", type=float, default=200.0, help="seconds the incidents last (and are watched)")
    ap.add_argument("--quick", action="store_true", help="smoke-test size: 20 s normal, 40 s of incidents")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # pages are below
    if args.quick:
        args.warmup, args.incident = 20.0, 40.0
    prom_bin, am_bin = prometheus_binary(install=True), alertmanager_binary(install=True)
    print(f"load average {os.getloadavg()[0]:.1f}; prometheus {prom_bin}, alertmanager {am_bin}")
    for p in PROFILES:
        print(f"  Prometheus {p.name}: {p.describe()}")
    print(f"  paywatch: embedded pipeline, shipped settings except paid_grace_s {PAID_GRACE_S:.0f} s")

    with tempfile.TemporaryDirectory(prefix="vs-prometheus-") as tmp_dir:
        tmp = Path(tmp_dir)
        seen = Seen()
        hook = webhook_server(seen)
        services = Services(tmp / "targets.json")
        ams: dict[str, AlertmanagerServer] = {}
        proms: dict[str, PrometheusServer] = {}
        stop = threading.Event()
        pipeline: Pipeline | None = None
        try:
            # Instances that beat in the first seconds get their targets before Prometheus starts.
            sim_settings = SimulatorSettings(utc_offset_h=12 - datetime.now(UTC).hour)  # lunch peak, local time
            for event in simulate(["normal"], seed=args.seed, duration=15, settings=sim_settings):
                services.get(event)
            names = sorted({i.service for i in services.instances.values()})
            for p in PROFILES:
                webhook = f"http://127.0.0.1:{hook.server_address[1]}"
                am = AlertmanagerServer(alertmanager_config(p, webhook), free_port(), tmp / f"am-{p.name}")
                ams[p.name] = am.start()
                prom = PrometheusServer(
                    prometheus_config(p, services.targets, am.port),
                    prometheus_rules(p, names),
                    free_port(),
                    tmp / f"prom-{p.name}",
                )
                proms[p.name] = prom.start()
            wait_scraped(proms, len(services.instances))
            watcher = threading.Thread(target=watch_alertmanagers, args=(ams, seen, stop), daemon=True)
            watcher.start()

            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            onset = start + timedelta(seconds=args.warmup)
            story = [
                "normal",
                f"channel_down:channel={DOWN_CHANNEL},start={args.warmup:.0f},duration={args.incident:.0f},rate=3",
                f"callback_outage:channel={OUTAGE_CHANNEL},start={args.warmup:.0f},duration={args.incident:.0f}",
                f"service_dies:service={DEAD_SERVICE},start={args.warmup:.0f}",
            ]
            run = simulate(
                story, seed=args.seed, duration=args.warmup + args.incident, start=start, settings=sim_settings
            )
            config = Config()
            config.embedded.database = tmp / "paywatch.sqlite"
            config.alerts.alertmanager.urls = [am.url for am in ams.values()]
            config.alerts.self_monitor.watchdog = False
            config.detectors = DetectorSettings(default=ChannelSettings(paid_grace_s=PAID_GRACE_S))
            store = SqliteStore(config.embedded.database)
            pipeline = Pipeline(config, store, started_at=start)
            print(f"traffic from {start:%H:%M:%S}, onset at {onset:%H:%M:%S} UTC: {'; '.join(story[1:])}")
            killed = False
            for second, batch in _per_second(iter(run)):
                if (ahead := second.timestamp() - time.time()) > 0:
                    time.sleep(ahead)
                if not killed and second > onset:
                    services.kill(DEAD_SERVICE)
                    killed = True
                services.observe(batch)
                pipeline.ingest(batch)
                pipeline.tick(second)
            report(seen, onset.timestamp(), args.incident, pipeline.events_in)
        finally:
            stop.set()
            if pipeline is not None:
                pipeline.alerting.close()
                pipeline.store.close()
            for server in [*proms.values(), *ams.values()]:
                server.stop()
            services.close()
            hook.shutdown()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


def first(table: dict, profile: str, stack: str, incident: str) -> float | None:
    times = [
        at
        for (p, s, name, subj), at in table.items()
        if (p, s) == (profile, stack) and incident_of(name, subj) == incident
    ]
    return min(times) if times else None


def report(seen: Seen, onset: float, watched: float, events: int) -> None:
    def fmt(at: float | None) -> str:
        return "not paged" if at is None else f"{at - onset:6.1f} s"

    print(f"{events:,} events; times from the onset; 'not paged' = nothing within {watched:.0f} s")
    for p in PROFILES:
        print(f"\n{p.name}: {p.describe()}")
        head = f"{'paywatch: at AM':>16s} {'paged':>10s} {'Prometheus: at AM':>18s} {'paged':>10s}"
        print(f"  {'incident':16s} {head}  ratio paged (at AM)")
        for incident in INCIDENTS:
            row = [
                first(t, p.name, stack, incident)
                for stack in ("paywatch", "prometheus")
                for t in (seen.arrived, seen.paged)
            ]
            pw_at, pw_paged, pr_at, pr_paged = row
            # polled every 0.25 s: an alert paged at once (group_wait 0s) reached Alertmanager no later
            pw_own = first(seen.paged, f"{p.name}-own", "paywatch", incident)
            pw_at = min(filter(None, (pw_at, pw_paged, pw_own)), default=None)
            pr_at = min(filter(None, (pr_at, pr_paged)), default=None)
            ratio = "—"
            if pw_paged and pr_paged:
                ratio = f"{(pr_paged - onset) / max(pw_paged - onset, 0.1):.1f}×"
                if pw_at and pr_at:
                    ratio += f" ({(pr_at - onset) / max(pw_at - onset, 0.1):.1f}×)"
            cells = f"{fmt(pw_at):>16s} {fmt(pw_paged):>10s} {fmt(pr_at):>18s} {fmt(pr_paged):>10s}"
            print(f"  {incident:16s} {cells}  {ratio}")
        if p.group_wait != "0s":
            own = []
            for incident in INCIDENTS:
                pw, pr = (
                    first(seen.paged, f"{p.name}-own", "paywatch", incident),
                    first(seen.paged, p.name, "prometheus", incident),
                )
                ratio = f", {(pr - onset) / max(pw - onset, 0.1):.1f}× sooner" if pw and pr else ""
                own.append(f"{incident} {fmt(pw).strip()}{ratio}")
            print(f"  paywatch paged on its own route (group_wait 0s): {'; '.join(own)}")
        for stack in ("paywatch", "prometheus"):
            false = sorted(
                f"{name}{{{subj}}} at {at - onset:+.0f} s"
                for (prof, s, name, subj), at in seen.paged.items()
                if (prof, s) == (p.name, stack) and (incident_of(name, subj) is None or at < onset)
            )
            print(f"  false pages, {stack}: {len(false)}" + (f" ({', '.join(false)})" if false else ""))


if __name__ == "__main__":
    main()
