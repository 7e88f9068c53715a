"""POSTing JSON to someone else's endpoint: one retry policy and one signature for every sender.

Pages (alerts/delivery.py) and repair actions to the order system (compensation/executor.py)
fail and recover alike. Retried: connection errors, timeouts, 5xx and 429 (honouring
Retry-After). Not retried: other 4xx, which mean the payload or the credentials are wrong and
will stay wrong.

Signed requests carry `X-Paywatch-Signature: sha256=<hex>`, HMAC-SHA256 with the shared secret
over `<timestamp>.<body>`, and `X-Paywatch-Timestamp`, that Unix time. Signing the timestamp
with the body means a captured request cannot be replayed later with a fresh timestamp;
receivers call `verify()` and reject anything older than the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import structlog

log = structlog.get_logger("paywatch.webhooks")

SIGNATURE_HEADER = "X-Paywatch-Signature"
TIMESTAMP_HEADER = "X-Paywatch-Timestamp"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signature_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


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
class Posted:
    """How one POST ended after its retries: accepted, or the last status and error."""

    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def post_json(
    client: httpx.Client,
    url: str,
    body: bytes,
    retry: Retry,
    *,
    target: str,
    headers: Callable[[bytes], dict[str, str]] = lambda body: {},
    sleep: Callable[[float], None] = time.sleep,
) -> Posted:
    """POST `body` until accepted, refused for good, or out of attempts; never raises on HTTP
    errors. `headers` is called per attempt, so a signature's timestamp is fresh on every retry.
    `target` names the receiver in the logs."""
    status: int | None = None
    error: str | None = None
    attempt = 0
    for attempt in range(1, retry.max_attempts + 1):
        retry_after = None
        try:
            response = client.post(url, content=body, headers={"Content-Type": "application/json", **headers(body)})
            status = response.status_code
            if response.is_success:
                return Posted(True, attempt, status)
            error = f"HTTP {status}: {response.text[:200]}"
            if status != 429 and status < 500:
                break
            retry_after = response.headers.get("Retry-After")
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        if attempt < retry.max_attempts:
            delay = retry.backoff(attempt, retry_after)
            log.warning("delivery failed, retrying", target=target, attempt=attempt, error=error, retry_in_s=delay)
            sleep(delay)
    log.error("delivery gave up", target=target, attempts=attempt, error=error)
    return Posted(False, attempt, status, error)
