"""The alerting core: findings in, alert changes out. No I/O, no wall clock.

Every finding is a *signal* about one source (its fingerprint) being open or resolved.
A rule turns the source into labels; sources with the same labels are one alert. The
alert is `pending` (recorded, not paged) until a rule's `page_at` is met, then `firing`
until its last source resolves (no flapping while an incident drains), then `resolved`.
A source whose own alert is not firing joins a firing alert of the same name about a wider
subject that contains it (a merchant's jam, the whole platform), so one jam pages once.
While firing it is re-sent on a schedule so Alertmanager never times it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from paywatch.alerts.kibana import evidence_query
from paywatch.alerts.model import Alert, AlertChange, Status, fingerprint
from paywatch.alerts.rules import Rule, Rules
from paywatch.finding import Finding, holds_open
from paywatch.kibana import discover_url
from paywatch.pan import id_digits, mask_id, mask_text

MAX_LISTED_ORDERS = 20


@dataclass(frozen=True)
class Signal:
    """One source's news: the engine's single input, from a finding or from self-monitoring."""

    kind: str
    key: str
    open: bool
    at: datetime
    summary: str
    level: str | None = None
    channel: str | None = None
    service: str | None = None
    merchant: str | None = None
    order_id: str | None = None
    event_ids: tuple[str, ...] = ()


def signal_from_finding(finding: Finding) -> Signal:
    """A channel back to healthy is its health finding resolving, whatever state it carries."""
    meta, payment, service = finding.finding, finding.payment, finding.service
    return Signal(
        kind=meta.kind,
        key=meta.fingerprint,
        open=holds_open(meta.state, meta.level),
        at=finding.timestamp,
        summary=meta.summary,
        level=meta.level,
        channel=payment.channel if payment else None,
        service=service.name if service else None,
        merchant=payment.merchant_id if payment else None,
        order_id=payment.order_id if payment else None,
        event_ids=tuple(meta.evidence.event_ids),
    )


@dataclass(frozen=True)
class Links:
    """Where an on-call person goes from a page: the runbook, and Kibana filtered to the evidence."""

    runbook_base_url: str = ""
    kibana_url: str = ""
    kibana_data_view: str = "logs-paywatch"
    kibana_lookback: timedelta = timedelta(hours=1)


@dataclass
class _State:
    labels: dict[str, str]
    starts_at: datetime
    status: Status = "pending"
    sources: dict[str, tuple[Rule, Signal]] = field(default_factory=dict)
    # Every source this alert has had, so a resolved page still carries its evidence.
    seen: dict[str, tuple[Rule, Signal]] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_sent: datetime | None = None
    # Open sources per effective rule, kept as sources come and go: paging checks stay O(rules).
    counts: dict[tuple, int] = field(default_factory=dict)
    rules: dict[tuple, Rule] = field(default_factory=dict)

    def add(self, key: str, rule: Rule, signal: Signal) -> None:
        self.remove(key)
        self.sources[key] = self.seen[key] = (rule, signal)
        ident = _rule_key(rule)
        self.rules.setdefault(ident, rule)
        self.counts[ident] = self.counts.get(ident, 0) + 1

    def remove(self, key: str) -> None:
        if key in self.sources:
            rule, _ = self.sources.pop(key)
            self.counts[_rule_key(rule)] -= 1

    def may_page(self) -> bool:
        """Some open source belongs to a paging rule: a firing alert stays firing until none does
        (below `page_at` is not enough, so an incident draining order by order never flaps)."""
        return any(count and self.rules[ident].page for ident, count in self.counts.items())

    def pages(self) -> Rule | None:
        """The first rule whose paging threshold the open sources meet, if any."""
        for ident, count in self.counts.items():
            rule = self.rules[ident]
            if rule.page and count >= rule.page_at:
                return rule
        return None


def _rule_key(rule: Rule) -> tuple:
    """Sources count together when they share a rule *as applied* (after channel overrides)."""
    return (rule.kind, rule.level, rule.page, rule.page_at)


class AlertEngine:
    def __init__(
        self,
        rules: Rules,
        resend_interval: timedelta = timedelta(minutes=1),
        links: Links | None = None,
    ) -> None:
        self._rules = rules
        self._resend = resend_interval
        self._links = links or Links()
        self._alerts: dict[str, _State] = {}
        self._source_alert: dict[str, str] = {}
        self._fingerprints: dict[tuple[tuple[str, str], ...], str] = {}

    def _fingerprint(self, labels: dict[str, str]) -> str:
        """Label sets repeat for every order of an incident: hash each distinct one once."""
        key = tuple(labels.items())
        found = self._fingerprints.get(key)
        if found is None:
            found = self._fingerprints[key] = fingerprint(labels)
        return found

    def on_finding(self, finding: Finding) -> list[AlertChange]:
        return self.on_signal(signal_from_finding(finding))

    def on_signal(self, signal: Signal) -> list[AlertChange]:
        changes: list[AlertChange] = []
        previous = self._source_alert.pop(signal.key, None)
        target = None
        rule = self._rules.match(signal.kind, signal.level) if signal.open else None
        if rule is not None:
            rule = rule.for_channel(signal.channel)
            labels = _labels(rule, signal)
            target = self._fingerprint(labels)
            state = self._alerts.get(target)
            if state is None or state.status != "firing":
                wider = self._firing_around(rule.alertname, signal, target)
                if wider is not None:
                    target, state = wider, self._alerts[wider]
            if state is None:
                state = self._alerts[target] = _State(labels=labels, starts_at=signal.at)
            state.add(signal.key, rule, signal)
            self._source_alert[signal.key] = target
        if previous is not None and previous != target:
            self._alerts[previous].remove(signal.key)
            changes += self._transition(previous, signal.at)
        if target is not None:
            changes += self._transition(target, signal.at)
        return changes

    def _firing_around(self, alertname: str, signal: Signal, own: str) -> str | None:
        """A firing alert of the same name about a wider subject containing this signal's: a stuck order
        of merchant m-7 joins `PaidButPending{merchant="m-7"}` (or the platform-wide one) while that
        pages, instead of paging again per channel. One jam, one page."""
        facts = {"channel": signal.channel, "service": signal.service, "merchant": signal.merchant}
        for key, state in self._alerts.items():
            if key == own or state.status != "firing" or state.labels["alertname"] != alertname:
                continue
            if all(facts.get(name) == value for name, value in state.labels.items() if name in facts):
                return key
        return None

    def tick(self, now: datetime) -> list[AlertChange]:
        """Re-send every firing alert whose last send is older than the resend interval."""
        changes = []
        for state in self._alerts.values():
            if state.status == "firing" and state.last_sent and now - state.last_sent >= self._resend:
                state.last_sent = now
                changes.append(AlertChange(self._snapshot(state), now, page=True, reason="resent"))
        return changes

    def active(self) -> list[Alert]:
        """Every alert not yet resolved, for status pages and restarts."""
        return [self._snapshot(s) for s in self._alerts.values()]

    def _transition(self, key: str, at: datetime) -> list[AlertChange]:
        state = self._alerts[key]
        if not state.sources:
            del self._alerts[key]
            was_firing = state.status == "firing"
            state.status = "resolved"
            return [AlertChange(self._snapshot(state, ends_at=at), at, page=was_firing, reason="resolved")]
        if state.first_seen is None:
            state.first_seen = at
            state.status = "firing" if state.pages() else "pending"
            return [self._opened(state, at, "opened")]
        if state.status == "pending" and state.pages():
            state.status = "firing"
            return [self._opened(state, at, "fired")]
        if state.status == "firing" and not state.may_page():
            state.status = "resolved"
            resolved = AlertChange(self._snapshot(state, ends_at=at), at, page=True, reason="resolved")
            # What is left only records (duplicates awaiting their refund): over for on-call.
            state.status, state.starts_at, state.last_sent = "pending", at, None
            return [resolved]
        return []

    def _opened(self, state: _State, at: datetime, reason: str) -> AlertChange:
        page = state.status == "firing"
        if page:
            state.last_sent = at
        return AlertChange(self._snapshot(state), at, page=page, reason=reason)  # type: ignore[arg-type]

    def _snapshot(self, state: _State, ends_at: datetime | None = None) -> Alert:
        return Alert(
            labels=dict(state.labels),
            annotations=self._annotations(state, ends_at),
            starts_at=state.starts_at,
            status=state.status,
            ends_at=ends_at,
            order_ids=tuple(sorted({mask_id(s.order_id) for _, s in state.seen.values() if s.order_id})),
        )

    def _annotations(self, state: _State, ends_at: datetime | None) -> dict[str, str]:
        current = state.sources or state.seen
        sources = [signal for _, signal in state.seen.values()]
        rule = state.pages() or next(iter(state.seen.values()))[0]
        latest = max(sources, key=lambda s: s.at)
        orders = sorted({mask_id(s.order_id) for s in sources if s.order_id})
        open_orders = {s.order_id for _, s in current.values() if s.order_id}
        count = len(open_orders) or len(current)
        fields = {
            "count": str(count),
            "orders": f"{count} order" if count == 1 else f"{count} orders",
            "channel": state.labels.get("channel", ""),
            "service": state.labels.get("service", ""),
            "merchant": state.labels.get("merchant", ""),
            "level": latest.level or "",
            "summary": latest.summary,
        }
        annotations = {"summary": _sentence(rule.summary.format_map(fields), set(state.labels.values()))}
        lines = [latest.summary]
        if orders:
            shown = ", ".join(orders[:MAX_LISTED_ORDERS])
            more = len(orders) - MAX_LISTED_ORDERS
            lines.append(f"Orders: {shown}" + (f" (+{more} more)" if more > 0 else ""))
        annotations["description"] = "\n".join(lines)
        if rule.runbook and self._links.runbook_base_url:
            annotations["runbook_url"] = f"{self._links.runbook_base_url}#{rule.runbook}"
        if self._links.kibana_url:
            start = min((s.at for s in sources), default=state.starts_at) - self._links.kibana_lookback
            query = evidence_query(
                orders,
                [mask_id(e) for s in sources for e in s.event_ids],
                {
                    f"payment.{k}" if k != "service" else "service.name": v
                    for k, v in state.labels.items()
                    if k in ("channel", "service")
                },
            )
            annotations["kibana_url"] = discover_url(
                self._links.kibana_url,
                self._links.kibana_data_view,
                query,
                start.isoformat(),
                ends_at.isoformat() if ends_at else None,
            )
        # Summaries come from payment data: a card number must not reach a pager or a chat. Ids
        # are not masked (a page must name orders that `paywatch orders show` finds); links are
        # built from ids and masked labels only, since masking a URL-encoded query mangles ids.
        keep = id_digits(orders)
        return {k: v if k.endswith("_url") else mask_text(v, keep) for k, v in annotations.items()}


def _labels(rule: Rule, signal: Signal) -> dict[str, str]:
    labels = {"alertname": rule.alertname, "severity": rule.severity}
    for name in rule.group_by:
        value = getattr(signal, name)
        if value:  # a merchant-wide incident names no channel: no `channel="unknown"` to route on
            labels[name] = mask_id(value) if name == "merchant" else mask_text(value)
    return labels


def _sentence(text: str, ids: set[str]) -> str:
    """Capitalise a summary's first word when it is a plain word ("channel ..."), never an id
    (a channel, service or merchant named first stays exactly as it is)."""
    first = text.split(" ", 1)[0]
    if first.isalpha() and first.islower() and first not in ids:
        return text[:1].upper() + text[1:]
    return text
