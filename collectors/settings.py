"""Configuration of the SDK (`sdk:`) and the collector (`collector:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SdkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
