"""Replay a JSONL event file through the detection core at full speed.

The clock is event time: before each event the engine is ticked at every whole
simulated second up to the event's `@timestamp`, so deadlines fire exactly as a live
worker ticking once a second would fire them. Nothing reads the wall clock, so the same
input gives byte-identical findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.timebase import to_ms

from paywatch.contract import ContractError, decode
from paywatch.finding import Finding

TICK_MS = 1000


@dataclass
class ReplayStats:
    events: int = 0
    findings: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def replay(
    lines: Iterable[bytes],
    engine: DetectionEngine,
    stats: ReplayStats | None = None,
    drain_s: float = 0.0,
    on_reject: Callable[[int, str], None] | None = None,
) -> Iterator[Finding]:
    """Findings of `engine` over the events in `lines`; bad lines are reported, never fatal."""
    stats = stats if stats is not None else ReplayStats()
    next_tick: int | None = None
    now = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = decode(line)
        except ContractError as exc:
            stats.rejected.append((number, str(exc)))
            if on_reject:
                on_reject(number, str(exc))
            continue
        at = to_ms(event.timestamp)
        if next_tick is None:
            next_tick = -(-at // TICK_MS) * TICK_MS
        while next_tick <= at:
            now = next_tick
            next_tick += TICK_MS
            for finding in engine.tick_ms(now):
                stats.findings += 1
                yield finding
        stats.events += 1
        for finding in engine.feed(event):
            stats.findings += 1
            yield finding
    if next_tick is None:
        return
    end = now + int(drain_s * 1000)
    while next_tick <= end:
        for finding in engine.tick_ms(next_tick):
            stats.findings += 1
            yield finding
        next_tick += TICK_MS
