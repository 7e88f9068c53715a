"""Configuration of the compensation stage (the `compensation:` section of paywatch.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CompensationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
