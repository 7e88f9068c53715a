"""Replay events through the detection core at full speed, clocked by the producers' watermark.

Each event is first counted in the engine's clock (`Timebase`: the time a quorum of
producers has reached, so one host's clock ahead or behind moves nothing), then the engine is
ticked at every whole second up to that clock, then the event is judged: deadlines fire
exactly as a live worker ticking once a second would fire them. Nothing reads the wall
clock, so the same input gives byte-identical findings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from paywatch.contract import ContractError, Event, decode
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.timebase import TICK_MS, Ticker, to_ms
from paywatch.finding import Finding


@dataclass
class ReplayStats:
    events: int = 0
    findings: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def decode_lines(
    lines: Iterable[bytes], stats: ReplayStats, on_reject: Callable[[int, str], None] | None = None
) -> Iterator[Event]:
    """Events of a JSONL file; a line that breaks the contract is reported, never fatal."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield decode(line)
        except ContractError as exc:
            stats.rejected.append((number, str(exc)))
            if on_reject:
                on_reject(number, str(exc))


def replay_events(
    events: Iterable[Event], engine: DetectionEngine, stats: ReplayStats | None = None, drain_s: float = 0.0
) -> Iterator[Finding]:
    """Findings of `engine` over `events` (in file order); `drain_s` keeps ticking after the last."""
    stats = stats if stats is not None else ReplayStats()
    timebase = engine.clock
    observe = timebase.observe
    ticker = Ticker()
    for event in events:
        claim = to_ms(event.timestamp)
        clock = observe(event.service.instance.id, claim)
        if timebase.established:  # before, too few producers to know the time
            for now in ticker.until(clock):
                for finding in engine.tick_ms(now):
                    stats.findings += 1
                    yield finding
        stats.events += 1
        for finding in engine.feed_ms(event, claim):
            stats.findings += 1
            yield finding
    if ticker.next is None:  # never established (a short file): drain from the newest claim
        if not timebase.now:
            return
        ticker.start(timebase.now)
        last = timebase.now
    else:
        last = ticker.next - TICK_MS
    for now in ticker.until(last + int(drain_s * 1000)):
        for finding in engine.tick_ms(now):
            stats.findings += 1
            yield finding


def replay(
    lines: Iterable[bytes],
    engine: DetectionEngine,
    stats: ReplayStats | None = None,
    drain_s: float = 0.0,
    on_reject: Callable[[int, str], None] | None = None,
) -> Iterator[Finding]:
    stats = stats if stats is not None else ReplayStats()
    return replay_events(decode_lines(lines, stats, on_reject), engine, stats, drain_s)
