"""The settings every layer shares: the `Section` base each component's settings derive from,
where Kafka and Elasticsearch are, what the topics are called, and how the YAML file is read.

The aggregating `Config` lives in the composition root (`paywatch.app.config`), above the
stages; a stage reads only its own section and these connection settings. Unknown keys are
an error in every section, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paywatch.contract import APP, HEARTBEAT, PAYMENT

CONFIG_ENV = "PAYWATCH_CONFIG"

Backend = Literal["embedded", "kafka"]


class Section(BaseModel):
    """A block of the YAML file: strict, so a misspelt key fails loudly."""

    model_config = ConfigDict(extra="forbid")


class Topics(Section):
    """Kafka topic names; these are the contract's defaults."""

    payments: str = Field("payments.events", description="Payment events (key: payment.order_id).")
    heartbeats: str = Field("paywatch.heartbeats", description="Heartbeats (key: service.name).")
    logs: str = Field("paywatch.logs", description="Structured application logs (dataset paywatch.app).")
    findings: str = Field("paywatch.findings", description="Detector findings, incl. compensating-query requests.")
    alerts: str = Field("paywatch.alerts", description="Every alert state change (stored as history).")
    actions: str = Field(
        "paywatch.actions", description="Compensating-query audit, repair actions and refund candidates."
    )
    dead_letter: str = Field(
        "paywatch.dlq", description="Messages that broke the contract or were rejected, with the reason."
    )
    channel_partials: str = Field(
        "paywatch.channel-partials",
        description="Per-window partial counts that detector workers send to the channel aggregator.",
    )
    otlp_logs: str = Field(
        "paywatch.otlp-logs",
        description="OpenTelemetry logs as OTLP/JSON (the OpenTelemetry Collector's Kafka exporter); "
        "`paywatch relay-otlp` puts their records on the contract topics.",
    )
    channel_health: str = Field(
        "paywatch.channel-health",
        description="Current health of each channel for payment routers (compacted, key: channel or "
        "channel/method; docs/channels.md).",
    )

    def for_events(self) -> dict[str, str]:
        """The topic of each dataset a producer emits: what the SDK, the simulator and the OTLP
        relay publish to, so all three route an event the same way."""
        return {PAYMENT: self.payments, HEARTBEAT: self.heartbeats, APP: self.logs}


class KafkaSettings(Section):
    """Where the Kafka backend's brokers are and what the topics are called."""

    bootstrap_servers: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers.")
    topics: Topics = Field(default_factory=Topics)
    client: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka properties (security.protocol, sasl.mechanism, …). "
        "Put passwords in `sasl_password_env`, not here.",
    )
    sasl_password_env: str | None = Field(None, description="Name of the environment variable holding sasl.password.")


class ElasticsearchSettings(Section):
    """Where the Kafka backend stores and reads history."""

    url: str = Field("http://127.0.0.1:19200", description="Elasticsearch URL.")
    namespace: str = Field("default", description="Data stream namespace: logs-paywatch.<dataset>-<namespace>.")
    api_key_env: str = Field("PAYWATCH_ES_API_KEY", description="Environment variable holding an API key.")
    api_key_file: Path | None = Field(None, description="File holding an API key (e.g. a mounted secret).")
    request_timeout_s: float = Field(30.0, description="Per-request timeout towards Elasticsearch.")


class ConfigError(ValueError):
    """A config file that is missing, unreadable or invalid: a user's mistake, reported in one line."""


M = TypeVar("M", bound=BaseModel)


def load_file(model: type[M], path: str | Path | None = None) -> M:
    """Validate the YAML file (argument, else $PAYWATCH_CONFIG, else all defaults) as `model`."""
    path = path or os.environ.get(CONFIG_ENV)
    raw: Any = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config {path or '(defaults)'}: {problems}") from None
