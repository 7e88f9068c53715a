"""Clock and fleet shapes on simulated traffic (simulator/scenarios.py), scored against the
simulator's ground truth: hosts whose clocks run 40 s behind and ahead, a beat dated 2099,
autoscaling with and without `stopping` beats, a heartbeat interval changing, and a consumer
rebalance re-delivering minutes of events. Nothing may page falsely; every death is paged
within its bound. Deterministic: simulated time only.
"""

from __future__ import annotations

import msgspec
import pytest

from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.detectors.scoring import Incident, Score, score
from paywatch.finding import Finding, is_incident
from paywatch.simulator.scenarios import simulate

pytestmark = pytest.mark.slow

GRACE_S = 10 * 3  # the simulated services beat every 10 s; missing after interval × grace
SKEWED = [
    "clock_skew:service=payment-gateway,instance=0,skew=-40",
    "clock_skew:service=callback-receiver,instance=1,skew=40",
    "clock_skew:service=order-service,instance=2,skew=-40",
]


def _run(scenarios: list[str], duration: str = "25m", seed: int = 3) -> tuple[list[Finding], list[Incident], Score]:
    run = simulate(scenarios, duration=duration, seed=seed, telemetry="direct", keep_records=False)
    findings = list(replay_events(run, DetectionEngine()))
    truth = [msgspec.convert(i.to_dict(), Incident) for i in run.incidents]
    return findings, truth, score(findings, truth)


def _show(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.timestamp.isoformat(), f.finding.fingerprint, f.finding.summary) for f in findings]


def _stuck(findings: list[Finding]) -> set[str]:
    return {
        f.finding.fingerprint
        for f in findings
        if f.finding.state == "open" and f.finding.kind in ("paid_but_pending", "duplicate_charge", "unknown_attempt")
    }


@pytest.fixture(scope="module")
def skewed_run() -> tuple[list[Finding], list[Incident], Score]:
    return _run([*SKEWED, "instance_dies:service=payment-gateway,instance=0,start=15m,slack=10"])


def test_hosts_40_s_behind_and_ahead_page_nothing_for_themselves_or_anyone_else(skewed_run):
    findings, _, result = skewed_run
    assert result.false_incidents == [], _show(result.false_incidents)
    flapping = [f for f in findings if f.finding.kind == "service_flapping"]
    assert flapping == [], _show(flapping)


def test_clock_skew_names_each_skewed_host_within_2_min(skewed_run):
    findings, _, result = skewed_run
    skews = [o for o in result.outcomes if o.kind == "clock_skew"]
    assert len(skews) == 3 and all(o.caught and o.delay_s <= 120 for o in skews), skews
    named = {f.finding.fingerprint.rsplit(":", 1)[0] for f in findings if f.finding.kind == "clock_skew"}
    assert named == {"clock_skew:payment-gateway", "clock_skew:callback-receiver", "clock_skew:order-service"}


def test_a_skewed_host_that_dies_is_paged_within_interval_times_grace_plus_10_s(skewed_run):
    _, _, result = skewed_run
    [death] = [o for o in result.outcomes if o.kind == "heartbeat_missing"]
    assert death.caught and death.delay_s <= GRACE_S + 10, death


def test_skewed_payment_producers_open_no_stuck_order_the_same_traffic_without_skew_does_not():
    """Skew consumes no randomness: the traffic is the same order for order, so every
    per-order finding must be the same as without it (none opened by a stamp 40 s off)."""
    plain, _, _ = _run(["normal"], "20m")
    skewed, _, result = _run(SKEWED, "20m")
    assert _stuck(skewed) == _stuck(plain)
    assert result.false_incidents == []


def test_a_beat_dated_2099_is_flagged_and_does_not_hide_a_later_death():
    findings, _, result = _run(
        [
            "stray_beat:service=compensation-job,instance=0,start=4m",
            "instance_dies:service=compensation-job,instance=0,start=12m",
        ],
        "18m",
    )
    [flag] = [f for f in findings if f.finding.kind == "clock_skew" and f.finding.state == "open"]
    assert "2099" in flag.finding.summary
    [death] = result.outcomes
    assert death.caught and death.delay_s <= GRACE_S + 2, death
    assert result.false_incidents == [], _show(result.false_incidents)


def test_autoscaling_with_stopping_beats_and_interval_changes_page_nothing():
    findings, truth, _ = _run(
        [
            "autoscale:service=order-service,start=3m,duration=6m,out=3,scale_in=3,stopping=1",
            "autoscale:service=compensation-job,start=4m,duration=8m,out=1,scale_in=2,stopping=1",
            "interval_change:service=callback-receiver,start=5m,duration=8m,interval=30",
            "interval_change:service=payment-gateway,start=6m,interval=5",
        ]
    )
    assert truth == []
    pages = [f for f in findings if f.finding.state == "open" and is_incident(f)]
    assert pages == [], _show(pages)


def test_autoscaling_without_stopping_beats_pages_the_instances_that_went_and_nothing_else():
    """A terminated VM says nothing: its silence is a real heartbeat_missing (the truth expects it),
    but the service is not down and nobody else is paged."""
    findings, _, result = _run(["autoscale:service=payment-gateway,start=3m,duration=6m,out=2,scale_in=2,stopping=0"])
    [gone] = result.outcomes
    assert gone.caught and gone.delay_s <= GRACE_S + 2, gone
    assert result.false_incidents == [], _show(result.false_incidents)
    pages = [f for f in findings if f.finding.state == "open" and is_incident(f)]
    assert {f.finding.kind for f in pages} == {"heartbeat_missing"} and len(pages) == 2, _show(pages)


def test_a_redelivery_storm_pages_nothing_and_brings_no_dead_service_back():
    findings, _, result = _run(
        [
            "service_dies:service=compensation-job,start=8m",
            "redelivery_storm:start=10m,span=4m",  # re-delivers the dead job's last beats too
        ],
        "16m",
    )
    [down] = result.outcomes
    assert down.caught and down.delay_s <= GRACE_S + 2, down
    assert result.false_incidents == [], _show(result.false_incidents)
    job = [(f.finding.kind, f.finding.state) for f in findings if f.service and f.service.name == "compensation-job"]
    assert ("service_down", "resolved") not in job and ("heartbeat_missing", "resolved") not in job, job
