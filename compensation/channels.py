"""The one small interface every channel's query API hides behind.

An adapter turns a `QueryRequest` (which attempt, at which channel) into the provider's
signed HTTP request, and the provider's answer into a `QueryResult`: the contract outcome
(success / failure / unknown), the channel's own status word, whether the channel said
"order not found", and the raw response for the audit trail. Whether "not found" means
failure is not the adapter's call: that depends on how long ago the attempt started, which
the compensator knows.
"""

from __future__ import annotations

import base64
import functools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx

from paywatch.config import read_secret

Outcome = Literal["success", "failure", "unknown"]
Purpose = Literal["status", "confirm_paid", "confirm_duplicate", "pre_refund"]


@dataclass(frozen=True)
class QueryRequest:
    """One compensating query the compensator wants sent."""

    channel: str
    order_id: str
    attempt_id: str
    seq: int
    purposes: tuple[Purpose, ...]
    due_at: datetime


@dataclass
class QueryResult:
    """What one query learned. `api_failed` means the query API itself failed (5xx, timeout,
    unreadable answer): it says nothing about the payment and counts against the circuit."""

    request: QueryRequest
    outcome: Outcome
    channel_status: str | None = None
    not_found: bool = False
    refunded: bool = False
    api_failed: bool = False
    throttled: bool = False
    retry_after_s: float | None = None
    http_status: int | None = None
    error: str | None = None
    raw: Any = None
    request_summary: dict[str, Any] = field(default_factory=dict)
    latency_ms: int = 0

    @property
    def answered(self) -> bool:
        """The channel said something about the payment (including 'not found')."""
        return not self.api_failed and not self.throttled


class ChannelAdapter(Protocol):
    async def query(self, client: httpx.AsyncClient, request: QueryRequest) -> QueryResult: ...


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@functools.lru_cache(maxsize=8)
def _private_key(private_key_pem: str) -> Any:
    """Parsing and checking a PEM key costs tens of milliseconds: once per key, not per query."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(private_key_pem.encode(), password=None)


def rsa_sha256_sign(private_key_pem: str, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: the scheme WeChat Pay v3 and Alipay RSA2 both use."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _private_key(private_key_pem)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def require_secret(what: str, env: str | None, file: Any = None) -> str:
    """A credential from the environment or a secrets file; the error names where, never the value."""
    value = read_secret(env, file)
    if not value:
        raise ValueError(f"{what}: set ${env}" + (f" or create {file}" if file else ""))
    return value


class HttpAdapter:
    """Sends the request `build` makes and hands the answer to `parse`; everything about
    transport failure, throttling and timing is handled here once for every provider."""

    name = "http"

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        """The provider's request, and a summary of it safe for the audit trail (no credentials)."""
        raise NotImplementedError

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        """Map an answered (non-5xx, non-429) response to a result."""
        raise NotImplementedError

    async def query(self, client: httpx.AsyncClient, request: QueryRequest) -> QueryResult:
        http_request, summary = self.build(request)
        started = time.perf_counter()
        try:
            response = await client.send(http_request)
            await response.aread()
        except httpx.HTTPError as exc:
            return QueryResult(
                request,
                "unknown",
                api_failed=True,
                error=f"{type(exc).__name__}: {exc}"[:300],
                request_summary=summary,
                latency_ms=int((time.perf_counter() - started) * 1000),
            )
        latency_ms = int((time.perf_counter() - started) * 1000)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if response.status_code == 429 or response.status_code >= 500:
            throttled = response.status_code == 429
            result = QueryResult(
                request,
                "unknown",
                api_failed=not throttled,
                throttled=throttled,
                error=f"HTTP {response.status_code}",
            )
        else:
            try:
                result = self.parse(request, response.status_code, body)
            except (KeyError, TypeError, ValueError) as exc:
                result = QueryResult(request, "unknown", api_failed=True, error=f"unreadable answer: {exc}")
        result.http_status = response.status_code
        result.retry_after_s = retry_after
        result.raw = body
        result.request_summary = summary
        result.latency_ms = latency_ms
        return result

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return httpx.Request(
            method, self.base_url + path, extensions={"timeout": httpx.Timeout(self.timeout_s).as_dict()}, **kwargs
        )


def build_adapters(settings: Any) -> dict[str, ChannelAdapter]:
    """One adapter per declared queryable channel, credentials read now (fail fast, by name)."""
    from paywatch.compensation.alipay import AlipayAdapter
    from paywatch.compensation.generic import GenericAdapter
    from paywatch.compensation.stripe import StripeAdapter
    from paywatch.compensation.wechatpay import WechatPayAdapter

    kinds = {"wechatpay": WechatPayAdapter, "alipay": AlipayAdapter, "stripe": StripeAdapter}
    adapters: dict[str, ChannelAdapter] = {}
    for name, ch in settings.channels.items():
        if ch.adapter == "none":
            continue
        timeout = settings.budget_for(name).timeout_s
        if ch.adapter == "generic":
            adapters[name] = GenericAdapter.from_settings(ch.base_url, timeout, ch.generic)
        else:
            adapters[name] = kinds[ch.adapter].from_settings(ch.base_url, timeout, getattr(ch, ch.adapter))
    return adapters
