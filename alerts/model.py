"""Alerts as on-call people and Alertmanager see them.

An alert is identified by its labels, exactly as in Alertmanager: the fingerprint is a
hash of the sorted label set, so it is stable across restarts and the same alert sent
twice is the same alert. Severity is a label, so a channel going from degraded to down
resolves one alert and fires another, which is what a pager needs to hear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Status = Literal["pending", "firing", "resolved"]


def fingerprint(labels: dict[str, str]) -> str:
    raw = "\x1f".join(f"{k}\x1e{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert snapshot. `pending` means recorded but below its paging threshold
    (a single stuck order); only `firing` and `resolved` reach a pager."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    status: Status
    ends_at: datetime | None = None
    # Every order this alert has been about: what makes the alert history searchable by order id.
    order_ids: tuple[str, ...] = ()
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def name(self) -> str:
        return self.labels["alertname"]


@dataclass(frozen=True)
class AlertChange:
    """What the engine decided at `at`: record this snapshot, and page with it if `page`.

    `reason` says why the change exists: opened (first pending/firing), fired (crossed
    the paging threshold), resent (schedule while firing), resolved."""

    alert: Alert
    at: datetime
    page: bool
    reason: Literal["opened", "fired", "resent", "resolved"]


@dataclass(frozen=True)
class Delivery:
    """The record of one sink delivering one batch: did the page get out, after how many tries."""

    sink: str
    fingerprints: tuple[str, ...]
    ok: bool
    attempts: int
    status_code: int | None = None
    error: str | None = None
