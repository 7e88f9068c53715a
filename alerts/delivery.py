"""Getting a page out: every HTTP sink POSTs JSON with retries, exponential backoff and a record.

A sink only says what requests a batch of alert changes becomes; the retry policy is the one
every paywatch sender uses (paywatch/webhooks.py), so Alertmanager, webhook, Slack and
PagerDuty fail and recover alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import structlog

from paywatch.alerts.model import AlertChange, Delivery
from paywatch.webhooks import Retry, post_json

log = structlog.get_logger("paywatch.alerts")


class Notifier(Protocol):
    name: str

    def send(self, changes: Sequence[AlertChange]) -> list[Delivery]: ...


@dataclass(frozen=True)
class Request:
    url: str
    body: Any
    fingerprints: tuple[str, ...]


class HttpSink:
    """Base of the HTTP sinks: subclasses implement `requests` (and `headers` to sign)."""

    name = "http"
    # Whether scheduled re-sends go out: Alertmanager needs them to keep an alert alive,
    # PagerDuty deduplicates them; a chat channel must not get the same page every minute.
    resends = True

    def __init__(
        self,
        retry: Retry | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._retry = retry or Retry()
        self._client = client or httpx.Client(timeout=self._retry.timeout_s)
        self._sleep = sleep

    def requests(self, changes: Sequence[AlertChange]) -> list[Request]:
        raise NotImplementedError

    def headers(self, body: bytes) -> dict[str, str]:
        """Headers computed per attempt, so a signature's timestamp is fresh on every retry."""
        return {}

    def send(self, changes: Sequence[AlertChange]) -> list[Delivery]:
        paging = [c for c in changes if c.page and (self.resends or c.reason != "resent")]
        if not paging:
            return []
        return [self._post(request) for request in self.requests(paging)]

    def _post(self, request: Request) -> Delivery:
        body = json.dumps(request.body, separators=(",", ":")).encode()
        posted = post_json(
            self._client, request.url, body, self._retry, target=self.name, headers=self.headers, sleep=self._sleep
        )
        if not posted.ok:
            log.error("alert not delivered", sink=self.name, fingerprints=list(request.fingerprints))
        return Delivery(self.name, request.fingerprints, posted.ok, posted.attempts, posted.status, posted.error)

    def close(self) -> None:
        self._client.close()


class LogSink:
    """Every change, paged or only recorded, as one structured log line: the sink that always works."""

    name = "log"

    def send(self, changes: Sequence[AlertChange]) -> list[Delivery]:
        for change in changes:
            alert = change.alert
            log.info(
                "alert",
                reason=change.reason,
                page=change.page,
                status=alert.status,
                fingerprint=alert.fingerprint,
                labels=alert.labels,
                summary=alert.annotations.get("summary"),
            )
        return [Delivery(self.name, tuple(c.alert.fingerprint for c in changes), True, 1)] if changes else []
