"""A backtest of pages: history through the detectors *and* the alert rules, at event time.

Findings say what the detectors concluded; pages are what wakes on-call. The rules
(`page_at`, rollups, resolve logic) sit between the two, so a rule change is judged by
replaying history through both and reading the pages that come out, scored against the
ground truth like findings are: recall, delay from the first detectable moment, false pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

import msgspec

from paywatch.alerts.engine import AlertEngine
from paywatch.alerts.model import AlertChange
from paywatch.alerts.rules import Rules, load_rules
from paywatch.clock import iso_utc
from paywatch.contract import Event, Timestamp
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.detectors.scoring import Mark, Score, finding_mark, score_marks
from paywatch.detectors.settings import DetectorSettings
from paywatch.finding import Finding
from paywatch.truth import Incident

_KEEP = {"channel", "service", "merchant"}


class Page(msgspec.Struct, omit_defaults=True, rename={"at": "@timestamp"}):
    """One notification on-call receives: an alert firing, or resolving after it fired."""

    at: Timestamp
    status: Literal["firing", "resolved"]
    alertname: str
    severity: str
    labels: dict[str, str]
    summary: str
    fingerprint: str
    description: str = ""


def page_of(change: AlertChange) -> Page | None:
    """The notification an alert change sends, if any (re-sends of a firing alert are not new pages)."""
    if not change.page or change.reason == "resent":
        return None
    alert = change.alert
    return Page(
        at=change.at,
        status="resolved" if alert.status == "resolved" else "firing",
        alertname=alert.name,
        severity=alert.labels.get("severity", ""),
        labels={k: v for k, v in alert.labels.items() if k in _KEEP},
        summary=alert.annotations.get("summary", ""),
        fingerprint=alert.fingerprint,
        description=alert.annotations.get("description", ""),
    )


def pages_of(findings: Iterable[Finding], alerts: AlertEngine) -> Iterator[tuple[Finding, list[Page]]]:
    """Each finding with the pages it caused, in order (a finding may cause none, one, or a resolve and a fire)."""
    for finding in findings:
        pages = [p for p in map(page_of, alerts.on_finding(finding)) if p is not None]
        yield finding, pages


def page_marks(pages: Iterable[Page], rules: Rules) -> list[Mark]:
    """Pages as scoring marks. A resolve counts as recovery only once nothing about the same subject
    and kinds still fires (a channel going degraded → down resolves one page while firing another)."""
    meaning: dict[str, tuple[frozenset[str], str | None]] = {}
    scoped: dict[str, bool] = {}
    for rule in rules.rules:
        kinds, level = meaning.get(rule.alertname, (frozenset(), None))
        meaning[rule.alertname] = (kinds | {rule.kind}, rule.level or level)
        scoped[rule.alertname] = scoped.get(rule.alertname, False) or bool(rule.group_by)
    firing: dict[tuple, set[str]] = {}
    marks: list[Mark] = []
    # At one instant the engine resolves the old alert before firing its successor: take fires first.
    for page in sorted(pages, key=lambda p: (p.at, p.status == "resolved")):
        kinds, level = meaning.get(page.alertname, (frozenset(), None))
        anywhere = not scoped.get(page.alertname, False)
        channel, service, merchant = (page.labels.get(k) for k in ("channel", "service", "merchant"))
        subject = (kinds, channel, service, merchant)
        alerts = firing.setdefault(subject, set())
        if page.status == "firing":
            alerts.add(page.fingerprint)
            marks.append(Mark(page.at, True, kinds, level, channel, service, merchant, True, page, anywhere))
            continue
        alerts.discard(page.fingerprint)
        if not alerts:
            after = "healthy" if "channel_health" in kinds else None
            marks.append(Mark(page.at, False, kinds, after, channel, service, merchant, False, page, anywhere))
    return marks


def score_pages(pages: list[Page], truth: list[Incident], rules: Rules, findings: Iterable[Finding] = ()) -> Score:
    """Pages against the truth. An expectation the truth marks `page: false` (a skewed clock, one
    silent instance among live siblings) is recorded, not paged: it is met by its finding among
    `findings`, and is a miss without them. Every other expectation must be met by a page, so a
    rule change that stops paging an incident shows as a miss. Only pages count as false alarms."""
    return score_marks(page_marks(pages, rules), truth, recorded=[finding_mark(f) for f in findings])


def describe(page: Page) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(page.labels.items()))
    return f"{iso_utc(page.at)} {page.status:<8} {page.alertname}{{{labels}}} {page.summary}"


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Page)


def encode_page(page: Page) -> bytes:
    return _encoder.encode(page)


def decode_page(raw: bytes) -> Page:
    return _decoder.decode(raw)


class Backtest(msgspec.Struct):
    findings: list[Finding]
    pages: list[Page]


def backtest(
    events: Iterable[Event],
    detectors: DetectorSettings | None = None,
    rules: Rules | None = None,
    drain_s: float = 0.0,
) -> Backtest:
    """Findings and pages of `events` (in file order, clocked by event time), with the shipped rules by default."""
    alerts = AlertEngine(rules or load_rules())
    result = Backtest(findings=[], pages=[])
    for finding, pages in pages_of(replay_events(events, DetectionEngine(detectors), drain_s=drain_s), alerts):
        result.findings.append(finding)
        result.pages += pages
    return result
