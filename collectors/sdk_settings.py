"""Configuration of the emitter SDK (the `sdk:` section of paywatch.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SdkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
