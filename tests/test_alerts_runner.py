"""The alert process without Kafka: raw findings in, deliveries through real local HTTP
receivers, documents out; catch-up after a restart pages nothing until it is done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts_support import Receiver, rules, stuck

from paywatch.alerts.delivery import LogSink
from paywatch.alerts.engine import AlertEngine
from paywatch.alerts.pagerduty import PagerDutySink
from paywatch.alerts.runner import AlertRunner
from paywatch.alerts.settings import AlertSettings
from paywatch.alerts.slack import SlackSink
from paywatch.finding import encode_finding
from paywatch.webhooks import Retry

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
SETTINGS = AlertSettings(self_monitor={"watched_services": []})


def no_sleep(_: float) -> None:
    pass


def test_every_sink_delivers_and_each_delivery_is_recorded_on_the_change():
    docs: list[dict] = []
    with Receiver() as slack, Receiver(fail_first=99) as pagerduty:
        sinks = [
            LogSink(),
            SlackSink(slack.url, Retry(max_attempts=2), sleep=no_sleep),
            PagerDutySink("key", url=pagerduty.url, retry=Retry(max_attempts=2), sleep=no_sleep),
        ]
        runner = AlertRunner(SETTINGS, AlertEngine(rules()), sinks, docs.append, T0)
        for i in range(3):
            runner.on_finding(encode_finding(stuck(f"o{i}", T0 + timedelta(seconds=i))))
        runner.on_finding(b'{"not": "a finding"}')
        runner.close()
    assert [d["event"]["action"] for d in docs] == ["opened", "fired"]
    assert docs[0]["alert"]["deliveries"] == [{"sink": "log", "ok": True, "attempts": 1}]
    fired = {d["sink"]: d for d in docs[1]["alert"]["deliveries"]}
    assert fired["slack"]["ok"] and len(slack.received) == 1
    assert not fired["pagerduty"]["ok"] and fired["pagerduty"]["attempts"] == 2
    assert fired["pagerduty"]["status_code"] == 503
    assert runner.rejected == 1


def test_catching_up_records_without_paging_then_resends_what_still_fires():
    docs: list[dict] = []
    with Receiver() as pagerduty:
        sink = PagerDutySink("key", url=pagerduty.url, sleep=no_sleep)
        runner = AlertRunner(SETTINGS, AlertEngine(rules()), [sink], docs.append, T0)
        runner.catching_up = True
        for i in range(4):
            runner.on_finding(encode_finding(stuck(f"o{i}", T0)))
        assert pagerduty.received == []
        assert [d["event"]["action"] for d in docs] == ["opened", "fired"]
        assert docs[1]["alert"]["deliveries"] == []
        [resent] = runner.caught_up(T0 + timedelta(seconds=30))
        runner.close()
    assert resent.reason == "resent" and resent.alert.status == "firing"
    [event] = [r.json() for r in pagerduty.received]
    assert event["event_action"] == "trigger" and event["dedup_key"] == resent.alert.fingerprint
    assert len(docs) == 2  # a re-send is not a state change: nothing more is published
