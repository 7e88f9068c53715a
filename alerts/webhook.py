"""Generic signed webhook: the alert documents as JSON, signed so receivers can trust them
(the signature and `verify()` for receivers are in paywatch/webhooks.py)."""

from __future__ import annotations

from collections.abc import Sequence

from paywatch.alerts.delivery import HttpSink, Request
from paywatch.alerts.document import alert_document
from paywatch.alerts.model import AlertChange
from paywatch.clock import Clock, SystemClock
from paywatch.webhooks import Retry, signature_headers


class WebhookSink(HttpSink):
    name = "webhook"
    resends = False

    def __init__(self, url: str, secret: str, retry: Retry | None = None, clock: Clock | None = None, **kw) -> None:
        super().__init__(retry, **kw)
        self._url = url
        self._secret = secret
        self._clock = clock or SystemClock()

    def requests(self, changes: Sequence[AlertChange]) -> list[Request]:
        body = {"version": "1", "alerts": [alert_document(c) for c in changes]}
        return [Request(self._url, body, tuple(c.alert.fingerprint for c in changes))]

    def headers(self, body: bytes) -> dict[str, str]:
        return signature_headers(self._secret, int(self._clock.now().timestamp()), body)
