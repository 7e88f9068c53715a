"""Configuration of the Kafka → Elasticsearch collector (the `collector:` section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CollectorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
