"""Getting a page out: every HTTP sink POSTs JSON with retries, exponential backoff and a record.

A sink only says what requests a batch of alert changes becomes; this module owns the
retry policy, so Alertmanager, webhook, Slack and PagerDuty fail and recover alike.
Retried: connection errors, timeouts, 5xx and 429 (honouring Retry-After). Not retried:
other 4xx, which mean the payload or the credentials are wrong and will stay wrong.
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

log = structlog.get_logger("paywatch.alerts")


class Notifier(Protocol):
    name: str

    def send(self, changes: Sequence[AlertChange]) -> list[Delivery]: ...


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed `attempt` (1-based): doubling, capped, Retry-After wins."""
        if retry_after:
            try:
                return min(float(retry_after), self.backoff_max_s)
            except ValueError:
                pass  # an HTTP-date Retry-After: fall back to our own schedule
        return min(self.backoff_base_s * 2 ** (attempt - 1), self.backoff_max_s)


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
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self._retry.max_attempts + 1):
            retry_after = None
            try:
                headers = {"Content-Type": "application/json", **self.headers(body)}
                response = self._client.post(request.url, content=body, headers=headers)
                status = response.status_code
                if response.is_success:
                    return Delivery(self.name, request.fingerprints, True, attempt, status)
                error = f"HTTP {status}: {response.text[:200]}"
                if status != 429 and status < 500:
                    break
                retry_after = response.headers.get("Retry-After")
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempt < self._retry.max_attempts:
                delay = self._retry.backoff(attempt, retry_after)
                log.warning(
                    "alert delivery failed, retrying", sink=self.name, attempt=attempt, error=error, retry_in_s=delay
                )
                self._sleep(delay)
        log.error(
            "alert delivery gave up",
            sink=self.name,
            attempts=attempt,
            error=error,
            fingerprints=list(request.fingerprints),
        )
        return Delivery(self.name, request.fingerprints, False, attempt, status, error)

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
