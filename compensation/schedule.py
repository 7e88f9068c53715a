"""When to ask a channel again about one attempt.

Query times are offsets from an anchor (when the attempt started), each delayed by a jitter
derived from the attempt id, so the schedule is deterministic (replays ask at the same
times) yet thousands of orders stuck by one outage do not query in lock-step.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from paywatch.compensation.settings import ScheduleSettings


def _unit(key: str, step: int) -> float:
    """A stable pseudo-random number in [0, 1) for (key, step)."""
    digest = hashlib.blake2b(f"{key}|{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def query_times(settings: ScheduleSettings, anchor: datetime, key: str) -> list[datetime]:
    """Every scheduled query time of one attempt, inside the horizon."""
    times = []
    previous = 0.0
    for step, offset in enumerate(settings.offsets_s):
        if offset > settings.horizon_s:
            break
        jitter = settings.jitter * (offset - previous) * _unit(key, step)
        times.append(anchor + timedelta(seconds=offset + jitter))
        previous = offset
    return times


def next_query(settings: ScheduleSettings, anchor: datetime, key: str, now: datetime) -> datetime | None:
    """The first scheduled query time strictly after `now`; None once the schedule is spent
    (missed times are skipped, never caught up in a burst)."""
    for at in query_times(settings, anchor, key):
        if at > now:
            return at
    return None


def retry_after_error(
    settings: ScheduleSettings, anchor: datetime, key: str, now: datetime, retry_after_s: float | None
) -> datetime | None:
    """When to re-ask after the query API failed; None past the horizon."""
    delay = max(settings.error_retry_s, retry_after_s or 0.0)
    at = now + timedelta(seconds=delay * (1 + settings.jitter * _unit(key, -1)))
    return at if at <= anchor + timedelta(seconds=settings.horizon_s) else None
