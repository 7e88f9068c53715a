"""Configuration of the alerts stage (the `alerts:` section of paywatch.yaml).

Alertmanager is the default on-call path; the webhook, Slack and PagerDuty sinks are
switched on by giving them a destination. Their secrets (webhook secret, Slack URL,
PagerDuty routing key) are read from the environment or a file, never from this file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from paywatch.settings import Section
from paywatch.webhooks import Retry


class DeliverySettings(Section):
    max_attempts: int = Field(5, ge=1, description="Tries per delivery before it is recorded as failed.")
    backoff_base_s: float = Field(0.5, gt=0, description="Wait after the first failed try; doubles each try.")
    backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between tries (also caps Retry-After).")
    timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one try.")

    def retry(self) -> Retry:
        return Retry(**self.model_dump())


class AlertmanagerSettings(Section):
    urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:19093"],
        description="Alertmanager base URLs; every alert goes to each (an HA cluster must hear all). "
        "Empty disables the sink.",
    )
    valid_for_s: float = Field(
        300.0,
        description="`endsAt` of a firing alert is this far past each send: while paywatch lives the "
        "alert is re-sent before it lapses; if paywatch dies it resolves instead of hanging forever. "
        "Keep it several times `resend_interval_s`.",
    )


class WebhookSettings(Section):
    url: str | None = Field(None, description="Generic webhook receiver; unset disables the sink.")
    secret_env: str = Field(
        "PAYWATCH_WEBHOOK_SECRET", description="Environment variable holding the HMAC-SHA256 shared secret."
    )
    secret_file: Path | None = Field(None, description="File holding the shared secret (a mounted secret).")


class SlackSettings(Section):
    webhook_url_env: str = Field(
        "PAYWATCH_SLACK_WEBHOOK_URL",
        description="Environment variable holding the Slack incoming-webhook URL (itself a secret); "
        "unset disables the sink.",
    )
    webhook_url_file: Path | None = Field(None, description="File holding the Slack webhook URL.")


class PagerDutySettings(Section):
    routing_key_env: str = Field(
        "PAYWATCH_PAGERDUTY_ROUTING_KEY",
        description="Environment variable holding the PagerDuty Events API v2 routing key; unset disables the sink.",
    )
    routing_key_file: Path | None = Field(None, description="File holding the routing key.")
    url: str = Field("https://events.pagerduty.com/v2/enqueue", description="Events API v2 endpoint.")


class SelfMonitorSettings(Section):
    watchdog: bool = Field(True, description="Send the always-firing PaywatchWatchdog alert to Alertmanager.")
    max_consumer_lag: int = Field(
        10_000, ge=0, description="Unread findings beyond which PaywatchStalled fires for the alert consumer."
    )
    max_tick_age_s: float = Field(
        120.0,
        gt=0,
        description="Seconds without a heartbeat from a watched paywatch stage before PaywatchStalled fires.",
    )
    watched_services: list[str] = Field(
        default_factory=lambda: ["paywatch-detect"],
        description="paywatch stages (heartbeat service.name) whose tick the alert process watches.",
    )


class AlertSettings(Section):
    rules_file: Path | None = Field(
        None, description="Alert rules YAML; unset uses the rules shipped with paywatch (alerts/rules.yaml)."
    )
    resend_interval_s: float = Field(60.0, gt=0, description="Firing alerts (and the watchdog) are re-sent this often.")
    tick_interval_s: float = Field(
        5.0, gt=0, description="How often the alert process checks re-sends and self-monitoring."
    )
    consumer_group: str = Field("paywatch-alert", description="Kafka consumer group reading paywatch.findings.")
    runbook_base_url: str = Field(
        "https://github.com/paywatch/paywatch/blob/main/docs/alerts.md",
        description="Runbook document; each rule's `runbook` is an anchor in it.",
    )
    kibana_data_view: str = Field(
        "logs-paywatch", description="Kibana data view id the evidence links open in Discover."
    )
    kibana_lookback_s: float = Field(
        3600.0, ge=0, description="Evidence links start this long before the alert's first finding."
    )
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    pagerduty: PagerDutySettings = Field(default_factory=PagerDutySettings)
    self_monitor: SelfMonitorSettings = Field(default_factory=SelfMonitorSettings)

    @property
    def resend_interval(self) -> timedelta:
        return timedelta(seconds=self.resend_interval_s)
