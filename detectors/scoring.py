"""Score findings, or pages, against the simulator's ground truth (format: docs/simulator.md).

Both are turned into `Mark`s and judged alike. An incident is caught when an opened mark
of an expected kind, matching the item's channel/service/level, appears within
[detect_from, detect_from + within_s]. A level item is also met by a worse level (`down`
meets `degraded`). Any alarm (an opened incident-level finding, or a page that fired) that
matches no incident — same channel or service (a finding or an incident naming neither
matches any), inside [start, end + 10 min] — is a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from paywatch.finding import Finding, is_incident
from paywatch.truth import Expectation, Incident

SLACK = timedelta(minutes=10)
SEVERITY_OF_LEVEL = {"healthy": 0, "degraded": 1, "down": 2}


@dataclass
class Outcome:
    """How one expectation of one incident was met."""

    incident: str
    kind: str
    subject: str
    caught: bool
    delay_s: float | None  # from detect_from (expect) or end (recover)
    recovery: bool = False


@dataclass
class Score:
    outcomes: list[Outcome] = field(default_factory=list)
    false_incidents: list = field(default_factory=list)  # findings or pages that match no incident

    @property
    def incidents(self) -> int:
        return len({o.incident for o in self.outcomes})

    @property
    def caught(self) -> int:
        missed = {o.incident for o in self.outcomes if not o.caught}
        return self.incidents - len(missed)

    @property
    def recall(self) -> float:
        return self.caught / self.incidents if self.incidents else 1.0

    @property
    def missed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.caught]


@dataclass(frozen=True)
class Mark:
    """One scored observation: a finding opening or resolving, or a page firing or resolving.

    Findings and pages are scored by the same rules; `kinds` are the finding kinds the mark
    stands for (a page stands for every kind its rules map to its alertname)."""

    at: datetime
    opened: bool
    kinds: frozenset[str]
    level: str | None
    channel: str | None
    service: str | None
    merchant: str | None
    alarm: bool  # an opening that woke (or would wake) someone: counts as a false alarm if unexplained
    source: object  # the finding or page, for reports
    anywhere: bool = False  # about every channel and service (a page whose rule groups by neither)


def finding_mark(f: Finding) -> Mark:
    return Mark(
        at=f.timestamp,
        opened=f.finding.state == "open",
        kinds=frozenset((f.finding.kind,)),
        level=f.finding.level,
        channel=f.payment.channel if f.payment else None,
        service=f.service.name if f.service else None,
        merchant=f.payment.merchant_id if f.payment else None,
        alarm=f.finding.state == "open" and is_incident(f),
        source=f,
    )


def _matches(m: Mark, item: Expectation) -> bool:
    if item.kind not in m.kinds:
        return False
    wrong_channel = item.channel is not None and m.channel != item.channel
    wrong_service = item.service is not None and m.service != item.service
    wrong_merchant = item.merchant is not None and m.merchant != item.merchant
    if not m.anywhere and (wrong_channel or wrong_service or wrong_merchant):
        return False
    if item.level is not None:
        level = m.level or "healthy"
        if item.level == "healthy" or level == "healthy":
            return level == item.level
        return SEVERITY_OF_LEVEL[level] >= SEVERITY_OF_LEVEL[item.level]
    return True


def _first(marks: list[Mark], item: Expectation, since: datetime, opened: bool) -> Mark | None:
    until = since + timedelta(seconds=item.within_s)
    for m in marks:
        if m.opened == opened and since <= m.at <= until and _matches(m, item):
            return m
    return None


def _subject(item: Expectation) -> str:
    return item.channel or item.service or item.merchant or "*"


def _explained(m: Mark, truth: list[Incident]) -> bool:
    """An alarm inside an incident's time about one of its subjects (or either side naming none)."""
    mine = {("channel", m.channel), ("service", m.service), ("merchant", m.merchant)}
    for inc in truth:
        if not inc.start <= m.at <= inc.end + SLACK:
            continue
        items = inc.expect + inc.recover
        theirs = {(name, getattr(i, name)) for i in items for name in ("channel", "service", "merchant")}
        theirs = {(name, value) for name, value in theirs if value is not None}
        if not theirs or all(value is None for _, value in mine) or mine & theirs:
            return True
    return False


def score_marks(marks: list[Mark], truth: list[Incident], recorded: list[Mark] | None = None) -> Score:
    """`marks` meet the expectations and are the alarms. With `recorded` (findings, when `marks`
    are pages), an expectation that is not to page (`page: false`) is met by those instead."""
    result = Score()
    ordered = sorted(marks, key=lambda m: m.at)
    findings = ordered if recorded is None else sorted(recorded, key=lambda m: m.at)
    for inc in truth:
        for item in inc.expect:
            hit = _first(ordered if item.page else findings, item, inc.detect_from, True)
            delay = (hit.at - inc.detect_from).total_seconds() if hit else None
            result.outcomes.append(Outcome(inc.id, item.kind, _subject(item), hit is not None, delay))
        for item in inc.recover:
            hit = _first(ordered, item, inc.end, False)
            delay = (hit.at - inc.end).total_seconds() if hit else None
            result.outcomes.append(Outcome(inc.id, item.kind, _subject(item), hit is not None, delay, True))
    result.false_incidents = [m.source for m in ordered if m.alarm and not _explained(m, truth)]
    return result


def score(findings: list[Finding], truth: list[Incident]) -> Score:
    """Findings against the truth (what the detectors concluded; pages are scored by `score_marks`)."""
    return score_marks([finding_mark(f) for f in findings], truth)
