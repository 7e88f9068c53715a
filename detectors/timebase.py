"""Detectors count time in integer epoch milliseconds: cheap to store and compare, exact to replay."""

from __future__ import annotations

from datetime import UTC, datetime


def to_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
