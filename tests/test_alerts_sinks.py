"""Sink payloads against the providers' documented formats, the webhook signature, and
retries with backoff against a real local HTTP server that fails, then succeeds."""

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from alerts_support import Receiver
from click.testing import CliRunner

from paywatch.alerts.alertmanager import AlertmanagerSink, alertmanager_alert
from paywatch.alerts.delivery import LogSink
from paywatch.alerts.document import alert_document
from paywatch.alerts.model import Alert, AlertChange
from paywatch.alerts.pagerduty import PagerDutySink, pagerduty_event
from paywatch.alerts.slack import SlackSink, slack_message
from paywatch.alerts.webhook import WebhookSink
from paywatch.app.alert import alert
from paywatch.clock import ManualClock
from paywatch.webhooks import Retry, SignatureError, sign, verify

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = {"alertname": "PaidButPending", "severity": "critical", "channel": "alipay"}
ANNOTATIONS = {
    "summary": "3 orders paid at alipay but still pending in the business",
    "description": "order o3 paid\nOrders: o1, o2, o3 <!channel>",
    "runbook_url": "https://docs.example/alerts.md#paid-but-pending",
    "kibana_url": "http://kibana:5601/app/discover#/?_g=(time:(from:'x',to:now))",
}


def change(status="firing", page=True, seconds=0):
    ends = T0 + timedelta(seconds=seconds) if status == "resolved" else None
    alert = Alert(LABELS, ANNOTATIONS, T0, status, ends, order_ids=("o1", "o2", "o3"))
    reason = "resolved" if status == "resolved" else "fired"
    return AlertChange(alert, T0 + timedelta(seconds=seconds), page=page, reason=reason)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_alertmanager_alert_shape():
    firing = alertmanager_alert(change(), timedelta(minutes=5))
    assert firing["labels"] == LABELS and firing["annotations"] == ANNOTATIONS
    assert firing["startsAt"] == "2026-03-01T12:00:00+00:00"
    assert firing["endsAt"] == "2026-03-01T12:05:00+00:00"  # lapses unless re-sent
    assert firing["generatorURL"] == ANNOTATIONS["kibana_url"]
    resolved = alertmanager_alert(change("resolved", seconds=90), timedelta(minutes=5))
    assert resolved["endsAt"] == "2026-03-01T12:01:30+00:00"


def test_pagerduty_events_v2_shape():
    trigger = pagerduty_event(change(), "R0UTINGKEY")
    assert trigger["routing_key"] == "R0UTINGKEY" and trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == change().alert.fingerprint
    payload = trigger["payload"]
    assert set(payload) >= {"summary", "source", "severity", "timestamp"}  # required by Events API v2
    assert payload["severity"] in {"critical", "error", "warning", "info"}
    assert payload["source"] == "alipay" and payload["class"] == "PaidButPending"
    assert payload["timestamp"] == "2026-03-01T12:00:00+00:00"
    assert {"href": ANNOTATIONS["runbook_url"], "text": "Runbook"} in trigger["links"]
    long = Alert(LABELS, {"summary": "x" * 5000}, T0, "firing")
    assert len(pagerduty_event(AlertChange(long, T0, True, "fired"), "k")["payload"]["summary"]) == 1024
    resolve = pagerduty_event(change("resolved", seconds=60), "R0UTINGKEY")
    assert resolve == {"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


def test_slack_incoming_webhook_shape():
    message = slack_message(change())
    assert message["text"].startswith(":red_circle: [FIRING] 3 orders paid at alipay")
    header, section = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "[FIRING] " + ANNOTATIONS["summary"]}}
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    text = section["text"]["text"]
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text  # no @channel ping from evidence text
    assert f"<{ANNOTATIONS['kibana_url']}|Evidence in Kibana>" in text
    assert slack_message(change("resolved"))["text"].startswith(":white_check_mark: [RESOLVED]")
    huge = Alert(LABELS, {"summary": "s" * 500, "description": "d" * 9000}, T0, "firing")
    blocks = slack_message(AlertChange(huge, T0, True, "fired"))["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and len(blocks[1]["text"]["text"]) == 3000


def test_signature_verifies_and_rejects_tampering_and_replay():
    body = b'{"alerts":[]}'
    headers = {"X-Paywatch-Timestamp": "1000", "X-Paywatch-Signature": sign("s3cret", 1000, body)}
    verify("s3cret", body, headers, now=1010)
    verify("s3cret", body, {k.lower(): v for k, v in headers.items()}, now=1010)
    with pytest.raises(SignatureError, match="does not match"):
        verify("s3cret", body + b" ", headers, now=1010)
    with pytest.raises(SignatureError, match="does not match"):
        verify("other", body, headers, now=1010)
    with pytest.raises(SignatureError, match="replayed"):
        verify("s3cret", body, headers, now=1000 + 301)
    forged = {**headers, "X-Paywatch-Timestamp": "1301"}  # fresh timestamp on an old signature
    with pytest.raises(SignatureError, match="does not match"):
        verify("s3cret", body, forged, now=1301)
    with pytest.raises(SignatureError, match="missing"):
        verify("s3cret", body, {}, now=1000)


def test_webhook_sink_delivers_signed_alert_documents():
    clock = ManualClock(T0)
    with Receiver() as receiver:
        sink = WebhookSink(receiver.url + "/hook", "s3cret", clock=clock)
        [delivery] = sink.send([change(), change(page=False)])
    assert delivery.ok and delivery.attempts == 1
    [got] = receiver.received
    verify("s3cret", got.body, got.headers, now=T0.timestamp())
    [doc] = got.json()["alerts"]  # the recorded-only change is not delivered
    assert doc == json.loads(json.dumps(alert_document(change())))
    assert doc["event"]["dataset"] == "paywatch.alert" and doc["payment"]["order_id"] == ["o1", "o2", "o3"]


def test_retries_with_exponential_backoff_until_the_server_recovers():
    sleeps = Sleeps()
    with Receiver(fail_first=3) as receiver:
        sink = PagerDutySink("key", url=receiver.url + "/v2/enqueue", retry=Retry(5, 0.5, 30, 5), sleep=sleeps)
        [delivery] = sink.send([change()])
    assert (delivery.ok, delivery.attempts, delivery.status_code) == (True, 4, 200)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(receiver.received) == 4
    assert len({r.body for r in receiver.received}) == 1


def test_retry_after_is_honoured_and_giving_up_is_recorded():
    sleeps = Sleeps()
    with Receiver(fail_first=10, fail_status=429, retry_after="7") as receiver:
        sink = SlackSink(receiver.url, retry=Retry(3, 0.5, 30, 5), sleep=sleeps)
        [delivery] = sink.send([change()])
    assert sleeps == [7.0, 7.0]
    assert not delivery.ok and delivery.attempts == 3 and delivery.status_code == 429
    assert "HTTP 429" in delivery.error


def test_client_errors_are_not_retried():
    sleeps = Sleeps()
    with Receiver(fail_first=10, fail_status=400) as receiver:
        [delivery] = SlackSink(receiver.url, sleep=sleeps).send([change()])
    assert (delivery.ok, delivery.attempts, sleeps) == (False, 1, [])


def test_unreachable_server_is_retried_then_recorded():
    sleeps = Sleeps()
    with Receiver() as receiver:
        url = receiver.url
    sink = AlertmanagerSink([url], timedelta(minutes=5), retry=Retry(3, 0.1, 1, 2), sleep=sleeps)
    [delivery] = sink.send([change()])
    assert not delivery.ok and delivery.attempts == 3 and delivery.status_code is None
    assert "ConnectError" in delivery.error and sleeps == [0.1, 0.2]


def test_log_sink_records_everything_paged_or_not():
    deliveries = LogSink().send([change(), change(page=False)])
    assert [d.ok for d in deliveries] == [True] and len(deliveries[0].fingerprints) == 2
    assert LogSink().send([]) == []


def test_http_sinks_ignore_recorded_only_changes_and_chat_ignores_resends():
    client = httpx.Client(transport=httpx.MockTransport(lambda r: pytest.fail("must not send")))
    assert SlackSink("http://x", client=client).send([change(page=False)]) == []
    resent = AlertChange(change().alert, T0, page=True, reason="resent")
    assert SlackSink("http://x", client=client).send([resent]) == []
    assert WebhookSink("http://x", "s", client=client).send([resent]) == []
    with Receiver() as receiver:
        [delivery] = PagerDutySink("key", url=receiver.url).send([resent])  # deduplicated by PagerDuty
    assert delivery.ok


def test_alert_command_refuses_a_webhook_without_its_secret_and_a_bad_rules_file(tmp_path, monkeypatch):

    monkeypatch.delenv("PAYWATCH_WEBHOOK_SECRET", raising=False)
    config = tmp_path / "paywatch.yaml"
    config.write_text("alerts:\n  webhook:\n    url: http://127.0.0.1:9/hook\n")
    result = CliRunner().invoke(alert, ["--config", str(config)])
    assert result.exit_code == 1 and "$PAYWATCH_WEBHOOK_SECRET" in result.output
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - kind: paid_but_pending\n    alertname: PaidButPending\n")
    config.write_text(f"alerts:\n  rules_file: {rules}\n")
    result = CliRunner().invoke(alert, ["--config", str(config)])
    assert result.exit_code == 1 and "invalid alert rules" in result.output and "severity" in result.output
