"""Incident rollups: many orders stuck, or charged twice, at once — per channel, per merchant, overall.

A single stuck order is a finding; a burst of them is an incident, and where the burst
concentrates says what broke. A channel's callbacks failing concentrates on the channel; one
merchant's order service no longer applying callbacks concentrates on the merchant, spread over
every channel; the platform's own order service jamming spreads over both. Each scope keeps a
sliding span of windows and pages once when its count crosses an absolute minimum and a multiple
of its own baseline (learned only from spans below the threshold, so a rising count never raises
its own bar). A wider scope leaves an incident to the narrower one when a single channel (or, for
the overall scope, a single channel or merchant) holds most of the orders stuck lately, so one jam
is one page.
Every finding names the channels and merchants concerned.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container
from dataclasses import dataclass

from paywatch.detectors.cardinality import Cap
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.stats import ewma
from paywatch.detectors.timebase import to_dt
from paywatch.detectors.windows import MERCHANT, OVERALL, Tally, Window, is_channel, overall
from paywatch.finding import Evidence, Finding, FindingPayment, make_finding

PENDING, DUPLICATES = "paid_but_pending_incident", "duplicate_charge_incident"
_FIELD = {PENDING: ("pending", "stuck_by"), DUPLICATES: ("duplicates", "duplicated_by")}
_WHAT = {PENDING: "paid but still pending", DUPLICATES: "charged more than once"}
_LISTED = 5  # names shown in a summary; the evidence figures have them all


@dataclass(frozen=True)
class _Scope:
    kind: str
    key: str  # window key: a channel, MERCHANT + id, or OVERALL
    span: int
    minimum: int
    defer_to: tuple[str, ...]  # name prefixes whose concentration hands the incident to a narrower scope


class _Rollup:
    """A sliding count of orders newly stuck (or duplicate-charged) in one scope."""

    __slots__ = ("baseline", "deferred", "named", "open", "quiet", "scope", "span", "total")

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope
        self.span: deque[int] = deque(maxlen=scope.span)
        self.named: deque[dict[str, int]] = deque(maxlen=scope.span)
        self.total = 0
        self.baseline = 0.0
        self.open = False
        self.deferred = False  # this burst was left to a narrower scope: not paged here while it lasts
        self.quiet = 0

    def push(self, n: int, named: dict[str, int]) -> int | None:
        """Add the newest window; return the count that left the span."""
        left = None
        if len(self.span) == self.span.maxlen:
            left = self.span[0]
            self.total -= left
        self.span.append(n)
        self.named.append(named)
        self.total += n
        return left

    def names(self, last: int | None = None) -> dict[str, int]:
        """Counts per channel / merchant over the span, or over its `last` windows."""
        summed: dict[str, int] = {}
        windows = self.named if last is None else list(self.named)[-last:]
        for named in windows:
            for name, n in named.items():
                summed[name] = summed.get(name, 0) + n
        return summed

    def idle(self) -> bool:
        return not self.open and not self.total and self.baseline < 0.01


class IncidentJudge:
    """Fed every closed window in order (empty ones too); `overall`: this judge owns the all-channel scope."""

    def __init__(self, settings: DetectorSettings, overall: bool = True) -> None:
        self.s = settings
        self.overall = overall
        self.rollups: dict[tuple[str, str], _Rollup] = {}
        self.merchant_cap = Cap("merchants", settings.max_merchants, "max_merchants")

    def _scope(self, kind: str, key: str) -> _Scope:
        s = self.s
        channel_wide = is_channel(key)
        if kind == PENDING:
            span = s.incident_span_windows if channel_wide else s.merchant_span_windows
            minimum = s.pending_incident_min_orders if channel_wide else s.merchant_incident_min_orders
        else:
            span, minimum = s.duplicate_span_windows, s.duplicate_incident_min_orders
        if channel_wide:
            defer: tuple[str, ...] = ()
        elif key == OVERALL:
            defer = ("channel=", "merchant=")
        else:
            defer = ("channel=",)
        return _Scope(kind, key, span, minimum, defer)

    def judge(self, at: int, window: Window, found: list[Finding], channels: Container[str]) -> None:
        """Roll one closed window up; `channels` are those tracked (the channel judge's cap), the rest
        count only in the platform-wide rollup."""
        merchants = {key for _, key in self.rollups if key.startswith(MERCHANT)}
        keys = [k for k in window if is_channel(k) and k in channels]
        for key in window:
            # a merchant past the cap is counted, not tracked: the platform-wide rollup still counts its orders
            if key.startswith(MERCHANT) and (
                key in merchants or self.merchant_cap.admits(len(merchants), key[len(MERCHANT) :], at, found)
            ):
                merchants.add(key)
                keys.append(key)
        for kind in (PENDING, DUPLICATES):
            for key in keys:
                if (kind, key) not in self.rollups:
                    self.rollups[kind, key] = _Rollup(self._scope(kind, key))
            if self.overall and (kind, OVERALL) not in self.rollups:
                self.rollups[kind, OVERALL] = _Rollup(self._scope(kind, OVERALL))
        total = window.get(OVERALL) or overall(window)  # Kafka workers send it; one process sums it here
        for ident in sorted(self.rollups):
            kind, key = ident
            field, by = _FIELD[kind]
            tally = total if key == OVERALL else window.get(key) or _EMPTY
            self._roll(self.rollups[ident], getattr(tally, field), getattr(tally, by), at, found)
            if key.startswith(MERCHANT) and self.rollups[ident].idle():
                del self.rollups[ident]  # merchants come and go by the thousand; keep only the live ones
        self.merchant_cap.release(len({key for _, key in self.rollups if key.startswith(MERCHANT)}), at, found)

    def _roll(self, r: _Rollup, n: int, named: dict[str, int], at: int, found: list[Finding]) -> None:
        s = self.s
        left = r.push(n, named)
        threshold = max(r.scope.minimum, s.incident_baseline_factor * r.baseline * len(r.span))
        if not r.open:
            if r.total < threshold:
                r.deferred = False
                if left is not None:
                    r.baseline = ewma(r.baseline, left, s.baseline_alpha)
            elif r.deferred or self._concentrated(r):
                r.deferred = True  # once left to a narrower scope, the same burst never pages here too
            else:
                r.open = True
                r.quiet = 0
                found.append(self._finding(r, "open", threshold, at))
            return
        r.quiet = 0 if n else r.quiet + 1
        if r.quiet >= s.incident_resolve_after:
            r.open = False
            found.append(self._finding(r, "resolved", threshold, at))
            r.span.clear()  # what this incident counted must not re-open it
            r.named.clear()
            r.total = 0

    def _concentrated(self, r: _Rollup) -> bool:
        """One channel (or merchant) holds most of this span's orders, enough to page in its own scope,
        and still most of the recent ones (the channel span): the narrower scope's incident. The recent
        check keeps an earlier channel outage still in the wide span from hiding a merchant's jam."""
        if not r.scope.defer_to:
            return False
        whole, recent = r.names(), r.names(self.s.incident_span_windows)
        orders = sum(n for name, n in whole.items() if name.startswith("channel="))
        lately = sum(n for name, n in recent.items() if name.startswith("channel="))
        share = self.s.incident_max_share
        for name, n in whole.items():
            if not name.startswith(r.scope.defer_to) or n <= share * orders:
                continue
            dimension, _, value = name.partition("=")
            narrower = self._scope(r.scope.kind, value if dimension == "channel" else MERCHANT + value)
            if n >= narrower.minimum and (not lately or recent.get(name, 0) > share * lately):
                return True
        return False

    def _finding(self, r: _Rollup, state: str, threshold: float, at: int) -> Finding:
        scope, what = r.scope, _WHAT[r.scope.kind]
        span_s = r.span.maxlen * self.s.window_s
        names = r.names()
        channels = _ranked(names, "channel=")
        merchants = _ranked(names, "merchant=")
        if scope.key == OVERALL:
            where, tag, payment = "across all channels", "all", None
        elif scope.key.startswith(MERCHANT):
            merchant = scope.key[len(MERCHANT) :]
            where, tag, payment = f"for merchant {merchant}", scope.key, FindingPayment(merchant_id=merchant)
            merchants = []
        else:
            # A channel's burst that is mostly one merchant's names it as its merchant too: the page
            # then joins that merchant's page when it already fires (one jam, one page).
            top = merchants[0] if merchants else None
            dominant = top[0] if top and top[1] > self.s.incident_max_share * r.total else None
            where, tag = f"on {scope.key}", scope.key
            payment = FindingPayment(channel=scope.key, merchant_id=dominant)
            channels = []
        detail = "; ".join(
            f"{label} {_listed(ranked)}"
            for label, ranked in (("channels", channels), ("merchants", merchants))
            if ranked
        )
        summary = f"{_orders(r.total)} {what} {where} in {span_s:g} s" + (f" ({detail})" if detail else "")
        figures: dict[str, int | float | str] = {
            "orders": r.total,
            "span_s": span_s,
            "threshold": round(threshold, 2),
            "baseline_per_window": round(r.baseline, 4),
        }
        if channels:
            figures["channels"] = ",".join(f"{n}:{k}" for n, k in channels)
        if merchants:
            figures["merchants"] = ",".join(f"{n}:{k}" for n, k in merchants)
        return make_finding(
            at=to_dt(at),
            kind=scope.kind,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            fingerprint=f"{scope.kind}:{tag}",
            severity="critical",
            summary=summary if state == "open" else f"no new orders {what} {where}",
            evidence=Evidence(figures=figures),
            payment=payment,
        )


_EMPTY = Tally()


def _ranked(names: dict[str, int], prefix: str) -> list[tuple[str, int]]:
    picked = [(name[len(prefix) :], n) for name, n in names.items() if name.startswith(prefix)]
    return sorted(picked, key=lambda item: (-item[1], item[0]))


def _listed(ranked: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{name} ×{n}" for name, n in ranked[:_LISTED])
    more = len(ranked) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _orders(n: int) -> str:
    return "1 order" if n == 1 else f"{n} orders"
