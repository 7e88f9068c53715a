"""Configuration of the compensation stage (the `compensation:` section of paywatch.yaml).

Every channel paywatch may ask is declared under `channels:` with the adapter that speaks
its query API; a channel that is not declared, or is declared with `adapter: none`, has no
query API and is reported as such instead of pretending to have been checked. Schedule and
budget have stage-wide defaults that each channel may override as a whole.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from paywatch.intake import IntakeSettings
from paywatch.settings import KafkaSettings, Section

AdapterName = Literal["wechatpay", "alipay", "stripe", "generic", "none"]


def check_base_url(url: str) -> str:
    """A channel's query API only over HTTPS: its answers move money. Plain HTTP only to a
    loopback test server."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and loopback:
        return url
    raise ValueError(f"base_url {url!r} must be https:// (plain http only to a loopback test server)")


class ScheduleSettings(Section):
    """When to ask again: passive wait first, then growing intervals, then hand to a person."""

    offsets_s: list[float] = Field(
        [120, 300, 600, 1800, 3600, 21600, 86400],
        description="Seconds after the attempt started at which the channel is queried "
        "(a query request arriving later than an offset is served at once).",
    )
    jitter: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Each query time is delayed by up to this fraction of its interval, derived "
        "from the attempt id, so thousands of stuck orders do not query in lock-step.",
    )
    horizon_s: float = Field(
        86400,
        gt=0,
        description="After this many seconds without a definite answer the compensator gives up "
        "and raises a `compensation_gave_up` finding with the evidence.",
    )
    error_retry_s: float = Field(
        30,
        gt=0,
        description="Delay before re-asking after the query API itself failed (5xx, timeout, 429); "
        "a Retry-After header, when longer, wins.",
    )
    not_found_grace_s: float = Field(
        600,
        ge=0,
        description="Inside this many seconds after the attempt started, 'order not found' means "
        "the record has not landed at the channel yet (unknown, ask again); after it, failure. Same default "
        "as `detectors.default.not_found_grace_s`: both judge the same answer, so keep them equal.",
    )

    @model_validator(mode="after")
    def _offsets_grow(self) -> ScheduleSettings:
        if not self.offsets_s or any(b <= a for a, b in zip(self.offsets_s, self.offsets_s[1:], strict=False)):
            raise ValueError("schedule.offsets_s must be a non-empty, strictly increasing list")
        return self


class BudgetSettings(Section):
    """How hard paywatch may lean on one channel's query API (bank query systems are fragile)."""

    qps: float = Field(5.0, gt=0, description="Most queries per second sent to the channel.")
    headroom: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Fraction of `qps` kept unused so network jitter never lets the channel observe "
        "more than `qps` requests in any one-second window.",
    )
    concurrency: int = Field(4, ge=1, description="Most queries in flight to the channel at once.")
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one query request.")
    breaker_failures: int = Field(
        5,
        ge=1,
        description="Consecutive failed queries (5xx, timeout, connection error) that open the "
        "circuit: the channel is not queried until the probe time.",
    )
    breaker_open_s: float = Field(
        30.0, gt=0, description="How long an opened circuit waits before one probe query is let through."
    )
    breaker_max_open_s: float = Field(
        600.0,
        gt=0,
        description="Each failed probe doubles the wait, up to this many seconds.",
    )
    throttle_pause_s: float = Field(
        1.0,
        ge=0,
        description="Pause after a 429 that carries no Retry-After header.",
    )


class WechatPaySettings(Section):
    """WeChat Pay API v3 merchant credentials (the private key itself is a secret)."""

    mchid: str = Field("", description="Merchant id (`mchid`) sent with each order query.")
    serial_no: str = Field("", description="Serial number of the merchant API certificate.")
    private_key_env: str = Field(
        "PAYWATCH_WECHATPAY_PRIVATE_KEY",
        description="Environment variable holding the merchant API private key (PEM).",
    )
    private_key_file: Path | None = Field(None, description="File holding the merchant API private key (PEM).")
    platform_key_env: str = Field(
        "PAYWATCH_WECHATPAY_PLATFORM_KEY",
        description="Environment variable holding the WeChat Pay platform public key or platform "
        "certificate (PEM) that every answer's `Wechatpay-Signature` must verify with.",
    )
    platform_key_file: Path | None = Field(
        None, description="File holding the WeChat Pay platform public key or platform certificate (PEM)."
    )
    platform_serial: str = Field(
        "",
        description="`Wechatpay-Serial` the answers must name: the platform public key id "
        "(`PUB_KEY_ID_…`) or the platform certificate serial number (unset: any serial, the "
        "signature must still verify with the configured key).",
    )
    sub_mchid: str | None = Field(
        None,
        description="Service-provider (partner) mode: the sub-merchant's id; `mchid` is then the "
        "service provider's `sp_mchid` and queries go to `/v3/pay/partner/transactions/…`.",
    )


class AlipaySettings(Section):
    """Alipay open platform application credentials (the private key itself is a secret)."""

    app_id: str = Field("", description="Application id (`app_id`).")
    private_key_env: str = Field(
        "PAYWATCH_ALIPAY_PRIVATE_KEY",
        description="Environment variable holding the application private key (PEM) used for RSA2.",
    )
    private_key_file: Path | None = Field(None, description="File holding the application private key (PEM).")
    alipay_public_key_env: str = Field(
        "PAYWATCH_ALIPAY_PUBLIC_KEY",
        description="Environment variable holding the Alipay public key (PEM or bare base64) that "
        "every answer's `sign` must verify with.",
    )
    alipay_public_key_file: Path | None = Field(None, description="File holding the Alipay public key.")
    app_auth_token_env: str | None = Field(
        None,
        description="ISV mode: environment variable holding the merchant's `app_auth_token`, sent "
        "with each query made on the merchant's behalf.",
    )
    app_auth_token_file: Path | None = Field(None, description="ISV mode: file holding the `app_auth_token`.")


class StripeSettings(Section):
    """Stripe API access (the secret key itself is a secret)."""

    secret_key_env: str = Field(
        "PAYWATCH_STRIPE_SECRET_KEY", description="Environment variable holding the secret key (sk_...)."
    )
    secret_key_file: Path | None = Field(None, description="File holding the secret key.")
    api_version: str | None = Field(None, description="`Stripe-Version` header; the account default if unset.")
    lookup: Literal["payment_intent", "metadata"] = Field(
        "payment_intent",
        description="`payment_intent`: the attempt id is the PaymentIntent id. `metadata`: the attempt "
        "id is the merchant's own id, stored in the PaymentIntent's metadata under `metadata_key` "
        "and found with the search API.",
    )
    metadata_key: str = Field("order_id", description="Metadata key holding the attempt id (`lookup: metadata`).")
    account: str | None = Field(None, description="Connect: the connected account (`acct_…`) sent as `Stripe-Account`.")


class GenericSettings(Section):
    """An HTTP/JSON query API described by a URL template and a field mapping."""

    method: Literal["GET", "POST"] = Field("GET", description="HTTP method of the query.")
    path: str = Field(
        "/orders/{attempt_id}",
        description="Path template appended to `base_url`; `{attempt_id}` and `{order_id}` are filled in.",
    )
    status_field: str = Field("status", description="Dotted path of the status in the JSON response.")
    success: list[str] = Field(["paid", "success"], description="Status values meaning the money moved.")
    failure: list[str] = Field(
        ["failed", "closed", "canceled"], description="Status values meaning the attempt is final and unpaid."
    )
    refunded: list[str] = Field(["refunded"], description="Status values meaning paid, then refunded.")
    not_found_http: list[int] = Field([404], description="HTTP statuses meaning 'order not found'.")
    token_env: str | None = Field(
        None, description="Environment variable holding a bearer token sent as `Authorization: Bearer`."
    )
    token_file: Path | None = Field(None, description="File holding the bearer token.")


class ChannelQuerySettings(Section):
    """One payment channel's query API."""

    adapter: AdapterName = Field(
        "none", description="Which query API the channel speaks; `none` = callback only, no query API."
    )
    base_url: str = Field("", description="Base URL of the channel's query API.")
    schedule: ScheduleSettings | None = Field(None, description="Overrides the stage-wide schedule.")
    budget: BudgetSettings | None = Field(None, description="Overrides the stage-wide budget.")
    dry_run: bool | None = Field(
        None,
        description="Overrides the stage-wide `dry_run` for this channel's repair and refund actions "
        "(e.g. true while a new channel's answers are being watched).",
    )
    wechatpay: WechatPaySettings = Field(default_factory=WechatPaySettings)
    alipay: AlipaySettings = Field(default_factory=AlipaySettings)
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    generic: GenericSettings = Field(default_factory=GenericSettings)

    @model_validator(mode="after")
    def _queryable_needs_url(self) -> ChannelQuerySettings:
        if self.adapter != "none" and not self.base_url:
            raise ValueError(f"channel with adapter {self.adapter!r} needs a base_url")
        if self.base_url:
            check_base_url(self.base_url)
        return self


class OrderWebhookSettings(Section):
    """Optional HTTP push of repair and refund actions to the order system."""

    url: str | None = Field(None, description="URL the order system listens on; unset = Kafka only.")
    secret_env: str = Field(
        "PAYWATCH_ORDER_WEBHOOK_SECRET",
        description="Environment variable holding the HMAC-SHA256 key for `X-Paywatch-Signature`.",
    )
    secret_file: Path | None = Field(None, description="File holding the webhook HMAC key.")
    allow_unsigned: bool = Field(
        False,
        description="Send repairs unsigned when no HMAC key is set. Off: a `url` without a key refuses "
        "to start, since an order system cannot tell paywatch's repairs from anyone else's.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook delivery.")
    retries: int = Field(3, ge=0, description="Retries of a failed delivery, with exponential backoff.")


class CompensationSettings(Section):
    """Compensating queries: ask the channel for the truth about stuck, unknown and duplicate
    attempts, within a per-channel budget, and turn confirmed answers into audited repair and
    refund-candidate actions."""

    dry_run: bool = Field(
        False,
        description="Query and audit everything, but mark repair/refund actions as dry-run and "
        "send no webhook: nothing outside paywatch changes.",
    )
    auto_refund: bool = Field(
        False,
        description="Turn confirmed duplicate charges into `refund` actions (after one more fresh "
        "query each). Off: they stay `refund_candidate` actions for a person.",
    )
    actor: str = Field("paywatch-compensator", description="Actor named in every audit record.")
    service_name: str = Field(
        "paywatch-compensator", description="`service.name` of the events and heartbeats this stage emits."
    )
    consumer_group: str = Field("paywatch-compensator", description="Kafka consumer group.")
    heartbeat_interval_s: float = Field(10.0, gt=0, description="Heartbeat interval of the compensator.")
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    order_webhook: OrderWebhookSettings = Field(default_factory=OrderWebhookSettings)
    channels: dict[str, ChannelQuerySettings] = Field(
        default_factory=dict,
        description="Channel name (as in `payment.channel`) → its query API: `adapter`, `base_url`, "
        "credentials section, optional `schedule`/`budget` overrides. Undeclared channels have no query API.",
    )

    def schedule_for(self, channel: str) -> ScheduleSettings:
        ch = self.channels.get(channel)
        return ch.schedule if ch is not None and ch.schedule is not None else self.schedule

    def budget_for(self, channel: str) -> BudgetSettings:
        ch = self.channels.get(channel)
        return ch.budget if ch is not None and ch.budget is not None else self.budget

    def dry_run_for(self, channel: str | None) -> bool:
        ch = self.channels.get(channel or "")
        return ch.dry_run if ch is not None and ch.dry_run is not None else self.dry_run

    def queryable(self, channel: str) -> bool:
        ch = self.channels.get(channel)
        return ch is not None and ch.adapter != "none"

    @property
    def rebuild_horizon_s(self) -> float:
        """How far back a restarted compensator re-reads findings: the longest any attempt is
        queried (`schedule.horizon_s`, default or a channel's own)."""
        schedules = [self.schedule] + [ch.schedule for ch in self.channels.values() if ch.schedule is not None]
        return max(s.horizon_s for s in schedules)


class CompensationConfig(Protocol):
    """What the compensation process reads of the config file: its own section and the shared
    connection settings. The app's `Config` is one; the stage never sees the other stages' sections."""

    kafka: KafkaSettings
    intake: IntakeSettings
    compensation: CompensationSettings
