"""Scenario tests on generated traffic (simulator/): realistic volumes, mixed channels, customer
failures, latency tails, customers re-paying, abandoned attempts, rolling deploys — scored against
the simulator's own ground truth with `detectors.scoring`, on the findings *and* on the pages the
shipped alert rules send (`paywatch.app.backtest`: what on-call receives).

(a) six simulated hours of normal traffic page nothing; (b)-(e) one run with a callback outage,
a duplicate-charge burst, a channel down at 50 attempts/s and a killed service, each paged
within the issue's bound (the bounds are the `within_s` the simulator writes into the truth).
"""

from __future__ import annotations

import msgspec
import pytest

from paywatch.alerts.rules import load_rules
from paywatch.app.backtest import Page, backtest, describe, score_pages
from paywatch.detectors.scoring import Score, score
from paywatch.finding import is_incident
from paywatch.simulator.scenarios import simulate
from paywatch.truth import Incident

pytestmark = pytest.mark.slow

INCIDENTS = [
    "callback_outage:channel=alipay,start=5m,duration=5m",
    "duplicate_burst:channel=wechatpay,start=14m,duration=3m",
    "channel_down:channel=bank_b,start=22m,duration=4m,fail=0.95,rate=50",
    "service_dies:start=32m",
]


def _run(scenarios: list[str], duration: str, seed: int) -> tuple[list, list[Incident], list[Page]]:
    # direct telemetry builds the same events as the SDK path (the simulator tests prove it), faster
    run = simulate(scenarios, duration=duration, seed=seed, telemetry="direct", keep_records=False)
    result = backtest(run)
    truth = [msgspec.convert(i.to_dict(), Incident) for i in run.incidents]
    return result.findings, truth, result.pages


@pytest.fixture(scope="module")
def incidents_run() -> tuple[list, list[Incident], Score]:
    findings, truth, pages = _run(INCIDENTS, "40m", seed=3)
    return findings, truth, score_pages(pages, truth, load_rules())


def test_the_findings_behind_the_pages_catch_every_incident_too(incidents_run):
    findings, truth, _ = incidents_run
    result = score(findings, truth)
    assert result.missed == [] and result.false_incidents == []


def _outcome(result: Score, truth: list[Incident], scenario: str, recovery: bool = False):
    [inc] = [i for i in truth if i.scenario == scenario]
    [o] = [o for o in result.outcomes if o.incident == inc.id and o.recovery == recovery]
    return o


def test_a_six_hours_of_normal_traffic_page_nothing():
    findings, truth, pages = _run(["normal"], "6h", seed=11)
    assert truth == []
    assert pages == [], [describe(p) for p in pages]
    incidents = [f for f in findings if f.finding.state == "open" and is_incident(f)]
    assert incidents == [], [(f.timestamp.isoformat(), f.finding.fingerprint, f.finding.summary) for f in incidents]
    # the noise was there: per-order findings show the detectors were working all along
    kinds = {f.finding.kind for f in findings}
    assert {"unknown_attempt", "paid_but_pending"} <= kinds


def test_b_callback_outage_paged_within_30_s_of_the_first_stuck_order(incidents_run):
    _, truth, result = incidents_run
    o = _outcome(result, truth, "callback_outage")
    assert o.caught and o.delay_s is not None and o.delay_s <= 30


def test_c_duplicate_burst_paged_within_10_s_of_the_second_duplicate(incidents_run):
    _, truth, result = incidents_run
    o = _outcome(result, truth, "duplicate_burst")
    assert o.caught and o.delay_s is not None and o.delay_s <= 10


def test_d_channel_down_degraded_within_30_s_healthy_within_2_min_without_flapping(incidents_run):
    findings, truth, result = incidents_run
    down, back = _outcome(result, truth, "channel_down"), _outcome(result, truth, "channel_down", recovery=True)
    assert down.caught and down.delay_s <= 30
    assert back.caught and back.delay_s <= 120
    changes = [f.finding.level for f in findings if f.finding.fingerprint == "channel_health:bank_b"]
    assert changes.count("healthy") == 1 and changes[-1] == "healthy"  # left unhealthy once, came back once


def test_e_killed_service_reported_within_interval_times_grace_plus_2_s(incidents_run):
    _, truth, result = incidents_run
    o = _outcome(result, truth, "service_dies")
    assert o.caught and o.delay_s <= 10 * 3 + 2


def test_no_false_pages_around_the_injected_ones(incidents_run):
    _, _, result = incidents_run
    assert result.false_incidents == [], [describe(p) for p in result.false_incidents]


def test_b_lost_callbacks_page_on_the_customers_second_payments():
    """Callbacks lost (not just unprocessed): the queries find the payments, nothing stays visibly
    pending, and what pages is the burst of customers paying twice."""
    _, truth, pages = _run(["callback_outage:channel=alipay,start=5m,duration=8m,mode=lost"], "20m", seed=5)
    result = score_pages(pages, truth, load_rules())
    [o] = result.outcomes
    assert o.caught and o.delay_s <= 10, o
    assert result.false_incidents == [], [describe(p) for p in result.false_incidents]


def test_a_merchant_jam_across_every_channel_pages_the_merchant_once_within_5_min():
    """One merchant's order service stops applying results (a share of its order shards), every channel
    healthy: ≥ 30 of its orders stuck in 15 min, a few per channel. One page, naming the merchant and
    its channels, within 5 min of the first order passing its grace; no per-channel page on top."""
    merchant = "m-travel-skyfare"
    findings, truth, pages = _run([f"merchant_jam:merchant={merchant},share=0.05,start=5m,duration=15m"], "30m", seed=3)
    stuck = {
        f.payment.order_id
        for f in findings
        if f.finding.kind == "paid_but_pending" and f.finding.state == "open" and f.payment.merchant_id == merchant
    }
    assert len(stuck) >= 30
    result = score_pages(pages, truth, load_rules())
    [o] = result.outcomes
    assert o.caught and o.delay_s <= 300, o
    assert result.false_incidents == [], [describe(p) for p in result.false_incidents]
    firing = [p for p in pages if p.status == "firing"]
    assert len(firing) == 1 and firing[0].labels == {"merchant": merchant}, [describe(p) for p in pages]
    channels = {f.payment.channel for f in findings if f.payment and f.payment.order_id in stuck}
    named = [c for c in channels if f"{c} ×" in firing[0].summary]  # those stuck by the time it paged
    assert len(channels) >= 4 and len(named) >= 3, firing[0].summary
