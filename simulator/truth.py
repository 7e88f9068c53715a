"""Ground truth: what really happened, as opposed to what the platform saw.

Two things live here. `ChannelRecord` is what a channel itself knows about one attempt
(whether it moved the money, when, how much): the fake channel query servers
(`simulator/channel_api.py`) answer from it, because only whoever moved the money is
authoritative. `GroundTruth` keeps those records and the injected incidents, in the
ground-truth JSONL format of paywatch/truth.py that `paywatch replay --truth` scores against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from paywatch.clock import Clock
from paywatch.truth import Incident

ChannelStatus = Literal["pending", "paid", "failed", "closed", "refunded"]


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """One attempt as the channel sees it at a given moment."""

    channel: str
    order_id: str
    attempt_id: str
    amount_minor: int
    currency: str
    created_at: datetime
    status: ChannelStatus
    paid_at: datetime | None = None
    closed_at: datetime | None = None
    error_code: str | None = None


class GroundTruth:
    """What each channel really did, queryable while the simulation runs or after it.

    `at` is the moment of the question in simulated time: the channel answers with its
    state then (a payment the customer authorises later is still pending now)."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._by_attempt: dict[str, object] = {}
        self._latest_by_order: dict[tuple[str, str], object] = {}
        self._query_faults: list[tuple[str, int, int, float]] = []
        self.incidents: list[Incident] = []

    def add_attempt(self, attempt: object) -> None:
        a = attempt  # simulator.model.Attempt; typed loosely to keep truth free of the model
        self._by_attempt[a.attempt_id] = a  # type: ignore[attr-defined]
        self._latest_by_order[(a.channel, a.order.order_id)] = a  # type: ignore[attr-defined]

    def add_query_fault(self, channel: str, start_ms: int, end_ms: int, error_rate: float) -> None:
        self._query_faults.append((channel, start_ms, end_ms, error_rate))

    def _ms(self, at: datetime | None) -> int | None:
        return None if at is None else int((at - self._start) / timedelta(milliseconds=1))

    def channel_record(
        self,
        channel: str,
        *,
        attempt_id: str | None = None,
        order_id: str | None = None,
        at: datetime | None = None,
    ) -> ChannelRecord | None:
        """The channel's record of an attempt (by attempt id, else the latest attempt of an
        order on that channel) as of `at`; None when the channel never saw it (yet)."""
        if attempt_id is not None:
            attempt = self._by_attempt.get(attempt_id)
            if attempt is not None and attempt.channel != channel:  # type: ignore[attr-defined]
                return None
        elif order_id is not None:
            attempt = self._latest_by_order.get((channel, order_id))
        else:
            raise ValueError("channel_record needs attempt_id or order_id")
        if attempt is None:
            return None
        return attempt.record(self._start, self._ms(at))  # type: ignore[attr-defined]

    def lookup(self, channel: str, clock: Clock | None = None) -> Callable[[str], ChannelRecord | None]:
        """Attempt id → the channel's record now (per `clock`, else at the end of the run): the
        callable the fake channel query servers (`simulator/channel_api.py`) answer from."""

        def answer(attempt_id: str) -> ChannelRecord | None:
            return self.channel_record(channel, attempt_id=attempt_id, at=clock.now() if clock else None)

        return answer

    def query_error_rate(self, channel: str, at: datetime) -> float:
        """Probability that the channel's query API errors or times out at `at` (query_api_flaky)."""
        ms = self._ms(at)
        assert ms is not None
        return max(
            (rate for ch, lo, hi, rate in self._query_faults if ch == channel and lo <= ms < hi),
            default=0.0,
        )
