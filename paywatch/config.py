"""One YAML file configures every paywatch process; every knob has a documented default.

Sections are owned by the component they configure (`<component>/settings.py`); this
module only composes them, loads the file and resolves secrets. Unknown keys are an
error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paywatch.alerts.settings import AlertSettings
from paywatch.collectors.sdk_settings import SdkSettings
from paywatch.collectors.settings import CollectorSettings
from paywatch.compensation.settings import CompensationSettings
from paywatch.contract import APP, HEARTBEAT, PAYMENT
from paywatch.dashboards.settings import DashboardSettings
from paywatch.detectors.settings import DetectorSettings
from paywatch.embedded.settings import EmbeddedSettings
from paywatch.intake import IntakeSettings
from paywatch.kibana import KibanaSettings
from paywatch.pan import PanSettings
from paywatch.simulator.settings import SimulatorSettings

CONFIG_ENV = "PAYWATCH_CONFIG"


class Section(BaseModel):
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


class Config(Section):
    backend: Literal["embedded", "kafka"] = Field(
        "embedded",
        description="`embedded`: one process, HTTP ingest, SQLite. `kafka`: Kafka transport, Elasticsearch storage, "
        "one process per stage. Detection and alerting are the same code either way.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    kibana: KibanaSettings = Field(default_factory=KibanaSettings)
    pan: PanSettings = Field(default_factory=PanSettings)
    sdk: SdkSettings = Field(default_factory=SdkSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    compensation: CompensationSettings = Field(default_factory=CompensationSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    dashboards: DashboardSettings = Field(default_factory=DashboardSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, raw: object) -> object:
        """Keys that moved fail by naming their new place (their values could disagree)."""
        if isinstance(raw, dict):
            for section in ("alerts", "dashboards"):
                if isinstance(raw.get(section), dict) and "kibana_url" in raw[section]:
                    raise ValueError(f"{section}.kibana_url is now kibana.url (one Kibana for links and imports)")
        return raw


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None = None) -> Config:
    """Load the YAML config (argument, else $PAYWATCH_CONFIG, else all defaults)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return Config()
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config {path}: {problems}") from None


def read_secret(env: str | None, file: Path | None = None) -> str | None:
    """A secret from the environment, else from a file; never from the YAML itself."""
    if env and os.environ.get(env):
        return os.environ[env]
    if file is not None:
        return Path(file).read_text().strip()
    return None
