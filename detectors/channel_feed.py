"""The channel-health feed for payment routers: which channels are healthy now.

Built from the `channel_health` findings the channel judge emits on every level change, not from
the judge's internals, so it says exactly what paging says. A router switches traffic away from
a channel (or channel × method) on `degraded`/`down` and back on `healthy`.

Published as the compacted Kafka topic `paywatch.channel-health`, keyed by channel (the Kafka
backend; the channel aggregator publishes on every change and re-publishes all periodically), and
served as `GET /v1/channels` (the embedded backend). The JSON shape is versioned (`FEED_VERSION`)
and documented in docs/channels.md. A channel that has never left healthy is absent: absent
means healthy as far as paywatch knows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec
from msgspec import Struct

from paywatch.finding import Finding, Level

FEED_VERSION: Final = "1"


class ChannelStatus(Struct, kw_only=True):
    """One channel's (or channel × method's) current health, version 1 of the feed."""

    version: Literal["1"] = FEED_VERSION
    key: str  # `alipay`, or `alipay/wallet` for one method
    channel: str
    method: str | None
    level: Level
    since: datetime  # event time the channel entered this level
    failure_rate: float  # failures / finished attempts over the judged span
    failure_rate_lower_bound: float  # exact binomial lower bound of that rate (97.5 %): down above down_failure_rate
    threshold: float  # the bound above which the channel is not healthy
    baseline: float  # the channel's usual failure rate
    finished: int
    failures: int  # channel and system failures only: customers' own failures never count
    span_s: float
    reason: str  # the finding's summary, one line for a human
    finding_id: str  # the channel_health finding that set this level


def status_of(finding: Finding) -> ChannelStatus | None:
    """The status a channel_health finding announces (None for any other finding)."""
    meta = finding.finding
    if meta.kind != "channel_health" or meta.level is None or finding.payment is None:
        return None
    figures = meta.evidence.figures
    channel = finding.payment.channel or ""
    method = finding.payment.method
    return ChannelStatus(
        key=f"{channel}/{method}" if method else channel,
        channel=channel,
        method=method,
        level=meta.level,
        since=finding.timestamp,
        failure_rate=float(figures.get("failure_rate", 0.0)),
        failure_rate_lower_bound=float(figures.get("failure_rate_lower_bound", 0.0)),
        threshold=float(figures.get("threshold", 0.0)),
        baseline=float(figures.get("baseline", 0.0)),
        finished=int(figures.get("finished", 0)),
        failures=int(figures.get("failures", 0)),
        span_s=float(figures.get("span_s", 0.0)),
        reason=meta.summary,
        finding_id=finding.event.id,
    )


class ChannelBoard:
    """The current status of every channel that has had a health finding."""

    def __init__(self) -> None:
        self.statuses: dict[str, ChannelStatus] = {}

    def on_finding(self, finding: Finding) -> ChannelStatus | None:
        """Take a finding; return the channel's new status if it changed (to publish), else None."""
        status = status_of(finding)
        if status is None:
            return None
        current = self.statuses.get(status.key)
        if current is not None and (current.level, current.since) == (status.level, status.since):
            return None  # the same finding again (a re-derivation after a rebuild)
        self.statuses[status.key] = status
        return status

    def snapshot(self) -> list[ChannelStatus]:
        """Every status, by key; safe to call from another thread (one atomic copy of the dict)."""
        return [status for _, status in sorted(list(self.statuses.items()), key=lambda item: item[0])]


_encoder = msgspec.json.Encoder()


def encode_status(status: ChannelStatus) -> bytes:
    return _encoder.encode(status)


def decode_status(raw: bytes) -> ChannelStatus:
    return msgspec.json.decode(raw, type=ChannelStatus)


def channels_reply(board: ChannelBoard) -> dict:
    """The body of `GET /v1/channels`."""
    return {"version": FEED_VERSION, "channels": msgspec.to_builtins(board.snapshot())}
