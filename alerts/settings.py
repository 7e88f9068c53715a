"""Configuration of the alerts stage (the `alerts:` section of paywatch.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
