"""One YAML file configures every paywatch process; every knob has a documented default.

Sections are owned by the component they configure (`<component>/settings.py`, shared
connection settings in `paywatch.settings`); this module, in the composition root, only
aggregates them, so no stage depends on another stage's settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, model_validator

from paywatch.alerts.settings import AlertSettings
from paywatch.app.embedded.settings import EmbeddedSettings
from paywatch.collectors.sdk_settings import SdkConfig
from paywatch.collectors.settings import CollectorSettings
from paywatch.compensation.settings import CompensationSettings
from paywatch.dashboards.settings import DashboardSettings
from paywatch.detectors.settings import DetectorSettings
from paywatch.intake import IntakeSettings
from paywatch.kibana import KibanaSettings
from paywatch.settings import ElasticsearchSettings, load_file
from paywatch.simulator.settings import SimulatorSettings


class Config(SdkConfig):
    """The whole file: the SDK's view (backend, kafka, pan, sdk) plus every other section, strictly."""

    model_config = ConfigDict(extra="forbid")

    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    kibana: KibanaSettings = Field(default_factory=KibanaSettings)
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
            if isinstance(raw.get("collector"), dict) and "group_id" in raw["collector"]:
                raise ValueError("collector.group_id is now collector.consumer_group (one name in every section)")
        return raw


def load_config(path: str | Path | None = None) -> Config:
    """Load the YAML config (argument, else $PAYWATCH_CONFIG, else all defaults)."""
    return load_file(Config, path)
