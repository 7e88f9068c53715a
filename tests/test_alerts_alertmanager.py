"""Against a REAL Prometheus Alertmanager: what it actually delivers to a webhook receiver.

Alertmanager compares startsAt/endsAt with its own wall clock, so these tests run the
engine on the current time (a ManualClock started at now), never on a fixed date.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from alerts_support import Receiver, am_config, posts, rules, stuck

from paywatch.alerts.alertmanager import AlertmanagerSink
from paywatch.alerts.engine import AlertEngine, Links
from paywatch.alerts.watchdog import watchdog_change
from paywatch.webhooks import Retry

pytestmark = pytest.mark.alertmanager


@pytest.fixture
def stack(alertmanager_factory):
    with Receiver() as receiver:
        am = alertmanager_factory(am_config(receiver.url))
        sink = AlertmanagerSink([am.url], valid_for=timedelta(minutes=5), retry=Retry(3, 0.2, 1, 5))
        yield receiver, am, sink
        sink.close()


def test_paid_but_pending_incident_pages_once_then_resolves_once(stack):
    receiver, _, sink = stack
    links = Links(runbook_base_url="https://docs.example/alerts.md", kibana_url="http://kibana.example:5601")
    engine = AlertEngine(rules(), resend_interval=timedelta(seconds=1), links=links)
    now = datetime.now(UTC)
    changes = [c for i in range(6) for c in engine.on_finding(stuck(f"o{i}", now + timedelta(milliseconds=i)))]
    assert sum(c.page for c in changes) == 1
    assert all(d.ok for d in sink.send(changes))

    got = receiver.wait_for(lambda r: len(posts(r)) >= 1, timeout=30)
    for _ in range(3):  # re-sends while firing refresh the alert but never page again
        time.sleep(1.2)
        assert all(d.ok for d in sink.send(engine.tick(datetime.now(UTC))))
    [firing] = posts(receiver.received)
    assert firing["status"] == "firing" and firing["groupLabels"] == {
        "alertname": "PaidButPending",
        "channel": "alipay",
    }
    [alert] = firing["alerts"]
    assert alert["labels"] == {"alertname": "PaidButPending", "severity": "critical", "channel": "alipay"}
    assert alert["annotations"]["summary"] == "3 orders paid at alipay but still pending in the business"
    assert alert["annotations"]["runbook_url"] == "https://docs.example/alerts.md#paid-but-pending"
    assert alert["generatorURL"] == alert["annotations"]["kibana_url"]  # Alertmanager's "source" link
    assert alert["generatorURL"].startswith("http://kibana.example:5601/app/discover#/?_g=(time:(from:'")

    resolved_at = datetime.now(UTC)
    resolved = [c for i in range(6) for c in engine.on_finding(stuck(f"o{i}", resolved_at, "resolved"))]
    assert [c.reason for c in resolved] == ["resolved"]
    sink.send(resolved)
    got = receiver.wait_for(lambda r: len(posts(r)) >= 2, timeout=30)
    time.sleep(2.5)  # two more group intervals: nothing else may arrive
    delivered = posts(receiver.received)
    assert [p["status"] for p in delivered] == ["firing", "resolved"], got
    assert delivered[1]["alerts"][0]["fingerprint"] == alert["fingerprint"]
    assert delivered[1]["alerts"][0]["annotations"]["description"].endswith("Orders: o0, o1, o2, o3, o4, o5")


def test_watchdog_is_always_present_at_alertmanager(stack):
    receiver, am, sink = stack
    now = datetime.now(UTC)
    [delivery] = sink.send([watchdog_change(now, now)])
    assert delivery.ok
    alerts = httpx.get(f"{am.url}/api/v2/alerts", params={"filter": 'alertname="PaywatchWatchdog"'}).json()
    assert len(alerts) == 1 and alerts[0]["status"]["state"] == "active"
    assert alerts[0]["labels"] == {"alertname": "PaywatchWatchdog", "severity": "none"}
    [post] = posts(receiver.wait_for(lambda r: posts(r, "/deadman"), timeout=30), "/deadman")
    assert post["status"] == "firing" and posts(receiver.received) == []


def test_a_silence_at_alertmanager_silences_delivery(stack):
    receiver, am, sink = stack
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "channel", "value": "alipay", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "on-call",
        "comment": "alipay maintenance window",
    }
    response = httpx.post(f"{am.url}/api/v2/silences", json=silence)
    assert response.status_code == 200, response.text
    silence_id = response.json()["silenceID"]

    engine = AlertEngine(rules())
    changes = [
        c
        for channel in ("alipay", "wechat")  # wechat is the control: it must get through
        for i in range(3)
        for c in engine.on_finding(stuck(f"{channel}-{i}", now, channel=channel))
    ]
    assert sum(c.page for c in changes) == 2
    sink.send(changes)
    receiver.wait_for(lambda r: len(posts(r)) >= 1, timeout=30)
    time.sleep(3)  # three group intervals for a silenced notification to (wrongly) show up
    delivered = posts(receiver.received)
    assert [p["groupLabels"]["channel"] for p in delivered] == ["wechat"]
    silenced = httpx.get(f"{am.url}/api/v2/alerts", params={"filter": 'channel="alipay"'}).json()
    assert silenced[0]["status"]["state"] == "suppressed"
    assert silenced[0]["status"]["silencedBy"] == [silence_id]
