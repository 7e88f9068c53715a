"""Simulated traffic through the real detectors and the shipped alert rules: one page per
injected incident (and its consequence), each resolved once, and no page from normal traffic."""

from __future__ import annotations

from collections import Counter

import pytest

from paywatch.alerts.engine import AlertEngine
from paywatch.alerts.rules import load_rules
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.detectors.settings import DetectorSettings
from paywatch.simulator.scenarios import simulate

pytestmark = pytest.mark.slow


def test_one_page_per_incident_and_none_from_normal_traffic():
    run = simulate(
        [
            "normal",
            "callback_outage:channel=alipay,start=3m,duration=4m",
            "channel_down:channel=bank_b,start=9m,duration=3m",
        ],
        duration="15m",
        seed=3,
    )
    engine = AlertEngine(load_rules())
    pages: Counter[tuple[str, str, str]] = Counter()
    for finding in replay_events(run, DetectionEngine(DetectorSettings())):
        for change in engine.on_finding(finding) + engine.tick(finding.timestamp):
            if change.page and change.reason != "resent":
                labels = change.alert.labels
                pages[labels["alertname"], labels.get("channel", ""), change.alert.status] += 1
    assert [i.scenario for i in run.incidents] == ["callback_outage", "channel_down"]
    assert pages == {
        # the callback outage: stuck orders, and customers paying again because of them
        ("PaidButPending", "alipay", "firing"): 1,
        ("PaidButPending", "alipay", "resolved"): 1,
        ("DuplicateCharge", "", "firing"): 1,
        ("DuplicateCharge", "", "resolved"): 1,
        # the channel outage
        ("ChannelDegraded", "bank_b", "firing"): 1,
        ("ChannelDegraded", "bank_b", "resolved"): 1,
    }
