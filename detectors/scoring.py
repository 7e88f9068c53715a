"""Score findings against the simulator's ground truth (format: team guide, "Ground truth").

An incident is caught when an opened finding of an expected kind, matching the item's
channel/service/level, appears within [detect_from, detect_from + within_s]. A level
item is also met by a worse level (`down` meets `degraded`). Any opened incident-level
finding that matches no incident — same channel or service (a finding or an incident naming
neither matches any), inside [start, end + 10 min] — is a false incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

from paywatch.finding import Finding, is_incident

SLACK = timedelta(minutes=10)
SEVERITY_OF_LEVEL = {"healthy": 0, "degraded": 1, "down": 2}


class Expectation(msgspec.Struct, omit_defaults=True):
    kind: str
    within_s: float
    channel: str | None = None
    service: str | None = None
    level: str | None = None


class Incident(msgspec.Struct, omit_defaults=True):
    id: str
    scenario: str
    start: datetime
    end: datetime
    detect_from: datetime
    expect: list[Expectation] = msgspec.field(default_factory=list)
    recover: list[Expectation] = msgspec.field(default_factory=list)


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
    false_incidents: list[Finding] = field(default_factory=list)

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


def read_truth(lines: list[bytes] | list[str]) -> list[Incident]:
    return [msgspec.json.decode(line, type=Incident) for line in lines if line.strip()]


def _matches(f: Finding, item: Expectation) -> bool:
    if f.finding.kind != item.kind:
        return False
    channel = f.payment.channel if f.payment else None
    service = f.service.name if f.service else None
    if item.channel is not None and channel != item.channel:
        return False
    if item.service is not None and service != item.service:
        return False
    if item.level is not None:
        level = f.finding.level or "healthy"
        if item.level == "healthy" or level == "healthy":
            return level == item.level
        return SEVERITY_OF_LEVEL[level] >= SEVERITY_OF_LEVEL[item.level]
    return True


def _first(findings: list[Finding], item: Expectation, since: datetime, state: str) -> Finding | None:
    until = since + timedelta(seconds=item.within_s)
    for f in findings:
        if f.finding.state == state and since <= f.timestamp <= until and _matches(f, item):
            return f
    return None


def _subject(item: Expectation) -> str:
    return item.channel or item.service or "*"


def _subjects(inc: Incident) -> tuple[set[str], set[str]]:
    items = inc.expect + inc.recover
    return {i.channel for i in items if i.channel}, {i.service for i in items if i.service}


def score(findings: list[Finding], truth: list[Incident]) -> Score:
    result = Score()
    ordered = sorted(findings, key=lambda f: f.timestamp)
    for inc in truth:
        for item in inc.expect:
            hit = _first(ordered, item, inc.detect_from, "open")
            delay = (hit.timestamp - inc.detect_from).total_seconds() if hit else None
            result.outcomes.append(Outcome(inc.id, item.kind, _subject(item), hit is not None, delay))
        for item in inc.recover:
            hit = _first(ordered, item, inc.end, "resolved")
            delay = (hit.timestamp - inc.end).total_seconds() if hit else None
            result.outcomes.append(Outcome(inc.id, item.kind, _subject(item), hit is not None, delay, True))
    for f in ordered:
        if f.finding.state != "open" or not is_incident(f):
            continue
        channel = f.payment.channel if f.payment else None
        service = f.service.name if f.service else None
        explained = False
        for inc in truth:
            if not inc.start <= f.timestamp <= inc.end + SLACK:
                continue
            channels, services = _subjects(inc)
            anywhere = not channels and not services  # e.g. duplicates "on any channel"
            if anywhere or (channel is None and service is None) or channel in channels or service in services:
                explained = True
                break
        if not explained:
            result.false_incidents.append(f)
    return result
