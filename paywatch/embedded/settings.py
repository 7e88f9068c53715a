"""Configuration of the embedded single-process backend (`embedded:`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EmbeddedSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
