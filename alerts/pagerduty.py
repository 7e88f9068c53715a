"""PagerDuty Events API v2: one event per alert change, `dedup_key` = the alert fingerprint,
so re-sends update the same PagerDuty alert and a resolve closes it."""

from __future__ import annotations

from collections.abc import Sequence

from paywatch.alerts.delivery import HttpSink, Request
from paywatch.alerts.model import AlertChange
from paywatch.webhooks import Retry

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024  # PagerDuty truncates longer summaries
# PagerDuty's severities are critical, error, warning, info.
SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def pagerduty_event(change: AlertChange, routing_key: str, source: str = "paywatch") -> dict:
    alert = change.alert
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.fingerprint}
    labels = alert.labels
    event = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.fingerprint,
        "payload": {
            "summary": alert.annotations.get("summary", alert.name)[:SUMMARY_MAX],
            "source": labels.get("channel") or labels.get("service") or source,
            "severity": SEVERITY.get(labels.get("severity", ""), "error"),
            "timestamp": alert.starts_at.isoformat(),
            "component": labels.get("channel") or labels.get("service") or "paywatch",
            "group": labels.get("merchant", "payments"),
            "class": alert.name,
            "custom_details": {"labels": labels, "description": alert.annotations.get("description", "")},
        },
        "client": "paywatch",
    }
    links = [
        {"href": alert.annotations[key], "text": text}
        for key, text in (("kibana_url", "Evidence in Kibana"), ("runbook_url", "Runbook"))
        if key in alert.annotations
    ]
    if links:
        event["links"] = links
    return event


class PagerDutySink(HttpSink):
    name = "pagerduty"

    def __init__(self, routing_key: str, url: str = EVENTS_URL, retry: Retry | None = None, **kw) -> None:
        super().__init__(retry, **kw)
        self._routing_key = routing_key
        self._url = url

    def requests(self, changes: Sequence[AlertChange]) -> list[Request]:
        return [Request(self._url, pagerduty_event(c, self._routing_key), (c.alert.fingerprint,)) for c in changes]
