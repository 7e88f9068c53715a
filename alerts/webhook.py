"""Generic signed webhook: the alert documents as JSON, signed so receivers can trust them.

`X-Paywatch-Signature: sha256=<hex>` is HMAC-SHA256, with the shared secret, over
`<timestamp>.<body>`; `X-Paywatch-Timestamp` is that Unix time. Signing the timestamp
with the body means a captured request cannot be replayed later with a fresh timestamp;
receivers call `verify()` and reject anything older than the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from paywatch.alerts.delivery import HttpSink, Request, Retry
from paywatch.alerts.document import alert_document
from paywatch.alerts.model import AlertChange
from paywatch.clock import Clock, SystemClock

SIGNATURE_HEADER = "X-Paywatch-Signature"
TIMESTAMP_HEADER = "X-Paywatch-Timestamp"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise SignatureError unless `body` was signed with `secret` within `tolerance_s` of `now`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not stamp:
        raise SignatureError(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"bad {TIMESTAMP_HEADER}: {stamp!r}") from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} outside ±{tolerance_s}s of now: replayed or clock skew")
    if not hmac.compare_digest(signature, sign(secret, timestamp, body)):
        raise SignatureError("signature does not match the body")


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
        timestamp = int(self._clock.now().timestamp())
        return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(self._secret, timestamp, body)}
