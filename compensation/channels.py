"""The one small interface every channel's query API hides behind.

An adapter turns a `QueryRequest` (which attempt, at which channel) into the provider's
signed HTTP request, and the provider's answer into a `QueryResult`: the contract outcome
(success / failure / unknown), the channel's own status word, whether the channel said
"order not found", the amount charged and refunded, and the raw response for the audit
trail. Whether "not found" means failure is not the adapter's call: that depends on how
long ago the attempt started, which the compensator knows.

Nothing the channel says is believed before it is verified: the provider's response
signature (WeChat Pay, Alipay) or HTTPS (Stripe), then that the answer is about the attempt
asked for, for the amount and currency expected. An answer that fails is `untrusted`: it
says nothing about the payment, and the compensator raises it instead of acting.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol

import httpx
import structlog

from paywatch import __version__
from paywatch.compensation.settings import check_base_url
from paywatch.retry_after import retry_after_seconds
from paywatch.secrets import read_secret

Outcome = Literal["success", "failure", "unknown"]
Purpose = Literal["status", "confirm_paid", "confirm_duplicate", "pre_refund"]
USER_AGENT = f"paywatch/{__version__}"
# Money purposes need the charged amount and the refund state, not just the status word.
REFUND_PURPOSES: frozenset[Purpose] = frozenset({"confirm_duplicate", "pre_refund"})

log = structlog.get_logger("paywatch.compensation")


@dataclass(frozen=True)
class QueryRequest:
    """One compensating query the compensator wants sent, with what the platform expects the
    channel to confirm (amount in minor units and currency, when a finding carried them)."""

    channel: str
    order_id: str
    attempt_id: str
    seq: int
    purposes: tuple[Purpose, ...]
    due_at: datetime
    amount_minor: int | None = None
    currency: str | None = None


@dataclass
class QueryResult:
    """What one query learned. `api_failed` means the query API itself failed (5xx, timeout,
    unreadable answer): it says nothing about the payment and counts against the circuit.
    `credentials` (the provider's code) means the channel refused who we are: nothing about the
    payment either, but no outage. `untrusted` (why) means an answer arrived that cannot be
    believed: unverified signature, or about another attempt, amount or currency."""

    request: QueryRequest
    outcome: Outcome
    channel_status: str | None = None
    not_found: bool = False
    refunded: bool = False  # the channel says some of it was refunded (amount maybe unknown)
    refunded_minor: int | None = None
    amount_minor: int | None = None  # what the channel says was charged (or ordered)
    currency: str | None = None
    unknown_status: bool = False
    api_failed: bool = False
    throttled: bool = False
    credentials: str | None = None
    untrusted: str | None = None
    retry_after_s: float | None = None
    http_status: int | None = None
    error: str | None = None
    raw: Any = None
    request_summary: dict[str, Any] = field(default_factory=dict)
    latency_ms: int = 0
    sent_at: datetime | None = None
    # The id the channel's answer names (out_trade_no, PaymentIntent metadata): checked
    # against the attempt asked for before the answer counts.
    echo: str | None = None

    @property
    def answered(self) -> bool:
        """The channel said something believable about the payment (including 'not found')."""
        return not (self.api_failed or self.throttled or self.credentials or self.untrusted)


class ChannelAdapter(Protocol):
    async def query(self, client: httpx.AsyncClient, request: QueryRequest) -> QueryResult: ...


@functools.lru_cache(maxsize=8)
def _private_key(private_key_pem: str) -> Any:
    """Parsing and checking a PEM key costs tens of milliseconds: once per key, not per query."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(private_key_pem.encode(), password=None)


@functools.lru_cache(maxsize=8)
def public_key(pem: str) -> Any:
    """The provider's public key from a PEM public key or an X.509 certificate (WeChat Pay
    ships either a platform certificate or, since 2024, a platform public key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = pem.strip().encode()
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    if not data.startswith(b"-----"):  # Alipay hands out the bare base64 of the key
        data = b"-----BEGIN PUBLIC KEY-----\n" + data + b"\n-----END PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(data)


def rsa_sha256_sign(private_key_pem: str, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64: the scheme WeChat Pay v3 and Alipay RSA2 both use."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _private_key(private_key_pem)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_sha256_verify(public_key_pem: str, message: bytes, signature_b64: str) -> bool:
    """The provider's SHA256withRSA signature over `message`, checked with its public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        public_key(public_key_pem).verify(
            base64.b64decode(signature_b64, validate=True), message, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def require_secret(what: str, env: str | None, file: Any = None) -> str:
    """A credential from the environment or a secrets file; the error names where, never the value."""
    value = read_secret(env, file)
    if not value:
        raise ValueError(f"{what}: set ${env}" + (f" or create {file}" if file else ""))
    return value


def mapped(table: dict[str, Outcome], value: str, channel: str) -> tuple[Outcome, bool]:
    """A provider status word → outcome. A word we do not know (a new or legacy status) is
    `unknown`, recorded raw and warned about: never an API failure, never a breaker trip."""
    if value in table:
        return table[value], False
    log.warning("unknown_channel_status", channel=channel, status=value)
    return "unknown", True


@dataclass(eq=False)
class HttpAdapter:
    """Builds every provider's request in one place (`_request`: User-Agent, Accept, timeout),
    sends it, verifies the answer and hands it to `parse`; transport failure, throttling,
    verification and timing are handled here once for every provider. A provider declares its
    credentials and options as (keyword-only) dataclass fields; secrets with `repr=False`."""

    name: ClassVar[str] = "http"

    base_url: str
    timeout_s: float

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url).rstrip("/")

    def build(self, request: QueryRequest) -> tuple[httpx.Request, dict[str, Any]]:
        """The provider's request, and a summary of it safe for the audit trail (no credentials)."""
        raise NotImplementedError

    def parse(self, request: QueryRequest, status: int, body: Any) -> QueryResult:
        """Map an answered (non-5xx, non-429) response to a result."""
        raise NotImplementedError

    def verify(self, response: httpx.Response) -> str | None:
        """Why this answer's signature cannot be trusted, or None. HTTPS alone by default."""
        return None

    async def query(self, client: httpx.AsyncClient, request: QueryRequest) -> QueryResult:
        http_request, summary = self.build(request)
        return await self.exchange(client, request, http_request, summary, self.parse)

    async def exchange(
        self,
        client: httpx.AsyncClient,
        request: QueryRequest,
        http_request: httpx.Request,
        summary: dict[str, Any],
        parse: Callable[[QueryRequest, int, Any], QueryResult],
    ) -> QueryResult:
        """One HTTP call of a query: send, time, classify transport failure and throttling,
        parse with `parse`, verify."""
        sent_at = datetime.now(UTC)
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
                sent_at=sent_at,
            )
        latency_ms = int((time.perf_counter() - started) * 1000)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
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
                result = parse(request, response.status_code, body)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                result = QueryResult(request, "unknown", api_failed=True, error=f"unreadable answer: {exc!r}"[:300])
            if result.answered:
                result = self._trusted(request, result, response)
        result.http_status = response.status_code
        result.retry_after_s = retry_after_seconds(response.headers.get("retry-after"))
        result.raw = body
        result.request_summary = summary
        result.latency_ms = latency_ms
        result.sent_at = sent_at
        return result

    def _trusted(self, request: QueryRequest, result: QueryResult, response: httpx.Response) -> QueryResult:
        """The answer itself if it is verified and about what was asked; else an untrusted result."""
        why = self.verify(response)
        if why is None and result.echo is not None and result.echo != request.attempt_id:
            why = f"answer is about {result.echo!r}, not attempt {request.attempt_id!r}"
        if why is None and not result.not_found:
            if request.amount_minor is not None and result.amount_minor not in (None, request.amount_minor):
                why = f"answer says amount {result.amount_minor}, the attempt was {request.amount_minor}"
            elif request.currency and result.currency and result.currency.upper() != request.currency.upper():
                why = f"answer says currency {result.currency}, the attempt was {request.currency}"
        if why is None:
            return result
        log.warning("untrusted_channel_answer", channel=request.channel, attempt_id=request.attempt_id, why=why)
        return QueryResult(request, "unknown", channel_status=result.channel_status, untrusted=why)

    def _request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Request:
        """Every adapter request is built here: providers reject requests without User-Agent
        and Accept (WeChat Pay v3: 400 INVALID_REQUEST), and `client.send` adds no defaults."""
        return httpx.Request(
            method,
            self.base_url + path,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            extensions={"timeout": httpx.Timeout(self.timeout_s).as_dict()},
            **kwargs,
        )
