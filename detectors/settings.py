"""Configuration of the detectors stage (the `detectors:` section of paywatch.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DetectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
