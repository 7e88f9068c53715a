"""Clock and fleet shapes on simulated traffic (simulator/scenarios.py), scored against the
simulator's ground truth on the pages the shipped rules send (`paywatch.app.backtest`: what
on-call receives) and on the findings behind them: hosts whose clocks run 40 s behind and
ahead, a beat dated 2099, autoscaling with and without `stopping` beats, a heartbeat interval
changing, and a consumer rebalance re-delivering minutes of events. Nothing may page falsely;
every death is paged (a whole service: `ServiceDown`) or recorded (one instance of several:
`heartbeat_missing`, which the shipped rules do not page) within its bound. Deterministic:
simulated time only.
"""

from __future__ import annotations

import msgspec
import pytest

from paywatch.alerts.rules import load_rules
from paywatch.app.backtest import Page, backtest, describe, score_pages
from paywatch.detectors.scoring import Score, score
from paywatch.finding import Finding
from paywatch.simulator.scenarios import simulate
from paywatch.truth import Incident

pytestmark = pytest.mark.slow

JOB = "compensation-job"
GRACE_S = 10 * 3  # the simulated services beat every 10 s; missing after interval × grace
SKEWED = [
    "clock_skew:service=payment-gateway,instance=0,skew=-40",
    "clock_skew:service=callback-receiver,instance=1,skew=40",
    "clock_skew:service=order-service,instance=2,skew=-40",
]


class Backtested:
    """One simulated run through the detectors and the shipped alert rules."""

    def __init__(self, scenarios: list[str], duration: str = "25m", seed: int = 3) -> None:
        run = simulate(scenarios, duration=duration, seed=seed, telemetry="direct", keep_records=False)
        result = backtest(run)
        self.findings: list[Finding] = result.findings
        self.pages: list[Page] = result.pages
        self.truth = [msgspec.convert(i.to_dict(), Incident) for i in run.incidents]
        self.by_findings: Score = score(self.findings, self.truth)
        self.by_pages: Score = score_pages(self.pages, self.truth, load_rules(), self.findings)

    def outcome(self, scenario: str, by_pages: bool = True):
        [inc] = [i for i in self.truth if i.scenario == scenario]
        result = self.by_pages if by_pages else self.by_findings
        [o] = [o for o in result.outcomes if o.incident == inc.id]
        return o

    def false_pages(self) -> list[str]:
        return [describe(p) for p in self.by_pages.false_incidents]

    def false_incidents(self) -> list[tuple[str, str, str]]:
        return _show(self.by_findings.false_incidents)


def _show(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.timestamp.isoformat(), f.finding.fingerprint, f.finding.summary) for f in findings]


def _stuck(findings: list[Finding]) -> set[str]:
    return {
        f.finding.fingerprint
        for f in findings
        if f.finding.state == "open" and f.finding.kind in ("paid_but_pending", "duplicate_charge", "unknown_attempt")
    }


@pytest.fixture(scope="module")
def skewed_run() -> Backtested:
    return Backtested(
        [
            *SKEWED,
            "clock_skew:service=compensation-job,instance=0,skew=40",
            "clock_skew:service=compensation-job,instance=1,skew=-40",
            "instance_dies:service=payment-gateway,instance=0,start=15m,slack=10",  # the host 40 s behind
            "service_dies:service=compensation-job,start=18m",  # both its hosts skewed, 40 s ahead and behind
        ]
    )


def test_hosts_40_s_behind_and_ahead_page_nothing_for_themselves_or_anyone_else(skewed_run):
    assert skewed_run.false_pages() == []
    assert skewed_run.false_incidents() == []
    flapping = [f for f in skewed_run.findings if f.finding.kind == "service_flapping"]
    assert flapping == [], _show(flapping)


def test_clock_skew_names_each_skewed_host_within_2_min(skewed_run):
    skews = [o for o in skewed_run.by_findings.outcomes if o.kind == "clock_skew"]
    assert len(skews) == 5 and all(o.caught and o.delay_s <= 120 for o in skews), skews
    named = {f.finding.fingerprint.rsplit(":", 1)[0] for f in skewed_run.findings if f.finding.kind == "clock_skew"}
    assert named == {
        "clock_skew:payment-gateway",
        "clock_skew:callback-receiver",
        "clock_skew:order-service",
        "clock_skew:compensation-job",
    }
    assert not [p for p in skewed_run.pages if p.alertname == "ClockSkew"]  # recorded, never paged


def test_a_skewed_host_that_dies_is_paged_within_interval_times_grace_plus_10_s(skewed_run):
    # the service whose hosts run 40 s ahead and 40 s behind: all die, ServiceDown pages
    down = skewed_run.outcome("service_dies")
    assert down.caught and down.delay_s <= GRACE_S + 10, down
    # one instance of three (the host 40 s behind) dies: recorded as heartbeat_missing in time
    gone = skewed_run.outcome("instance_dies", by_pages=False)
    assert gone.caught and gone.delay_s <= GRACE_S + 10, gone


def test_skewed_payment_producers_page_nothing_and_open_no_stuck_order_that_plain_traffic_does_not():
    """Skew consumes no randomness: the traffic is the same order for order, so every per-order
    finding must be the same as without it (none opened by a stamp 40 s off), and nothing pages."""
    plain, skewed = Backtested(["normal"], "20m"), Backtested(SKEWED, "20m")
    assert _stuck(skewed.findings) == _stuck(plain.findings)
    assert skewed.pages == [], [describe(p) for p in skewed.pages]


def test_a_beat_dated_2099_is_flagged_and_does_not_hide_a_later_death():
    run = Backtested(
        [
            "stray_beat:service=compensation-job,instance=0,start=4m",
            "service_dies:service=compensation-job,start=12m",
        ],
        "18m",
    )
    [flag] = [f for f in run.findings if f.finding.kind == "clock_skew" and f.finding.state == "open"]
    assert "2099" in flag.finding.summary
    down = run.outcome("service_dies")
    assert down.caught and down.delay_s <= GRACE_S + 2, down
    assert run.false_pages() == []


def test_autoscaling_with_stopping_beats_and_interval_changes_page_nothing():
    run = Backtested(
        [
            "autoscale:service=order-service,start=3m,duration=6m,out=3,scale_in=3,stopping=1",
            "autoscale:service=compensation-job,start=4m,duration=8m,out=1,scale_in=2,stopping=1",
            "interval_change:service=callback-receiver,start=5m,duration=8m,interval=30",
            "interval_change:service=payment-gateway,start=6m,interval=5",
        ]
    )
    assert run.truth == []
    assert run.pages == [], [describe(p) for p in run.pages]
    assert run.false_incidents() == []


def test_autoscaling_without_stopping_beats_records_the_instances_that_went_and_pages_nothing():
    """A terminated VM says nothing: its silence is a real heartbeat_missing (the truth expects the
    finding), but the service is not down, so nothing pages."""
    run = Backtested(["autoscale:service=payment-gateway,start=3m,duration=6m,out=2,scale_in=2,stopping=0"])
    gone = run.outcome("autoscale", by_pages=False)
    assert gone.caught and gone.delay_s <= GRACE_S + 2, gone
    assert run.false_incidents() == []
    assert run.pages == [], [describe(p) for p in run.pages]
    missing = {f.finding.fingerprint for f in run.findings if f.finding.kind == "heartbeat_missing"}
    assert len(missing) == 2 and not [f for f in run.findings if f.finding.kind == "service_down"]


def test_a_redelivery_storm_pages_nothing_and_brings_no_dead_service_back():
    run = Backtested(
        [
            "service_dies:service=compensation-job,start=8m",
            "redelivery_storm:start=10m,span=4m",  # re-delivers the dead job's last beats too
        ],
        "16m",
    )
    down = run.outcome("service_dies")
    assert down.caught and down.delay_s <= GRACE_S + 2, down
    assert run.false_pages() == []
    assert [(p.alertname, p.status) for p in run.pages] == [("ServiceDown", "firing")], [describe(p) for p in run.pages]
    job = [(f.finding.kind, f.finding.state) for f in run.findings if f.service and f.service.name == JOB]
    assert ("service_down", "resolved") not in job and ("heartbeat_missing", "resolved") not in job, job
