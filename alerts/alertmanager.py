"""The default on-call path: Prometheus Alertmanager API v2, so grouping, inhibition,
silences and receivers are Alertmanager's own.

Firing alerts carry an `endsAt` a little beyond the next re-send (Prometheus does the
same): while paywatch lives they never time out, and if paywatch dies they resolve on
their own instead of hanging forever, while the watchdog's absence tells on-call why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from paywatch.alerts.delivery import HttpSink, Request
from paywatch.alerts.model import AlertChange
from paywatch.webhooks import Retry


def alertmanager_alert(change: AlertChange, valid_for: timedelta) -> dict:
    alert = change.alert
    ends_at = alert.ends_at if alert.status == "resolved" else change.at + valid_for
    body = {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "startsAt": alert.starts_at.isoformat(),
        "endsAt": ends_at.isoformat() if ends_at else None,
    }
    if "kibana_url" in alert.annotations:
        body["generatorURL"] = alert.annotations["kibana_url"]
    return body


class AlertmanagerSink(HttpSink):
    """POSTs to every Alertmanager of an HA cluster: each one must hear every alert."""

    name = "alertmanager"

    def __init__(self, urls: Sequence[str], valid_for: timedelta, retry: Retry | None = None, **kw) -> None:
        super().__init__(retry, **kw)
        self._urls = [u.rstrip("/") + "/api/v2/alerts" for u in urls]
        self._valid_for = valid_for

    def requests(self, changes: Sequence[AlertChange]) -> list[Request]:
        body = [alertmanager_alert(c, self._valid_for) for c in changes]
        fingerprints = tuple(c.alert.fingerprint for c in changes)
        return [Request(url, body, fingerprints) for url in self._urls]
