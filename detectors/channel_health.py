"""Judging closed windows per channel: health, error-code spikes, incident rollups.

Fed complete windows (the sum of every worker's partials) in order, so one judge sees
each channel globally. Each judgement compares a sliding span of windows with the
channel's own baseline, learned only from windows judged healthy, so an outage never
teaches the judge that outages are normal.

- Health: the Wilson lower bound of the span's failure rate must exceed the baseline by a
  factor and a margin (and a floor) for `degrade_after` judgements in a row → degraded,
  or down when the bound reaches `down_failure_rate`. Back to healthy only after
  `recover_after` judgements at or below the exit threshold (half the entry threshold).
- Customer failures (error_category user/limit) never count against the channel, but a
  single code's share jumping far above its baseline is an `error_code_spike`.
- Stuck and duplicate-charged orders are rolled up into incidents by `incidents.py`
  (per channel, per merchant, overall), fed the same windows.
"""

from __future__ import annotations

from collections import deque

from paywatch.detectors.incidents import IncidentJudge
from paywatch.detectors.settings import ChannelSettings, DetectorSettings
from paywatch.detectors.stats import ewma, wilson_bounds
from paywatch.detectors.timebase import to_dt
from paywatch.detectors.windows import FIELDS, Tally, Window, is_channel
from paywatch.finding import Evidence, Finding, FindingPayment, Severity, make_finding


class _Channel:
    __slots__ = (
        "bad",
        "baseline",
        "code_baseline",
        "codes_open",
        "good",
        "knobs",
        "level",
        "span",
        "sums",
    )

    def __init__(self, settings: DetectorSettings, knobs: ChannelSettings) -> None:
        self.knobs = knobs
        self.span: deque[Tally] = deque(maxlen=settings.health_span_windows)
        self.sums = Tally()
        self.baseline = settings.baseline_prior_failure_rate
        self.code_baseline: dict[str, float] = {}
        self.codes_open: dict[str, int] = {}  # code -> healthy judgements in a row while open
        self.level = "healthy"
        self.bad = 0
        self.good = 0

    def push(self, tally: Tally) -> None:
        if len(self.span) == self.span.maxlen:
            old = self.span[0]
            for name in FIELDS:
                setattr(self.sums, name, getattr(self.sums, name) - getattr(old, name))
            for code, n in old.codes.items():
                left = self.sums.codes[code] - n
                if left:
                    self.sums.codes[code] = left
                else:
                    del self.sums.codes[code]
        self.span.append(tally)
        self.sums.add(tally)


class ChannelJudge:
    def __init__(self, settings: DetectorSettings, overall: bool = True) -> None:
        self.s = settings
        self.window_ms = int(settings.window_s * 1000)
        self.lateness_ms = int(settings.allowed_lateness_s * 1000)
        self.channels: dict[str, _Channel] = {}
        # `overall`: this judge owns the all-channel incident scope (one judge of several does)
        self.incidents = IncidentJudge(settings, overall)
        self.last_index: int | None = None
        self._gap_limit = max(
            settings.health_span_windows, settings.incident_span_windows, settings.merchant_span_windows
        ) + max(settings.recover_after, settings.incident_resolve_after)

    def on_window(self, index: int, window: Window) -> list[Finding]:
        """Judge a closed window (and, first, any skipped empty ones) for every known channel."""
        found: list[Finding] = []
        if self.last_index is not None and index > self.last_index + 1:
            first_empty = max(self.last_index + 1, index - self._gap_limit)
            for empty in range(first_empty, index):
                self._judge(empty, {}, found)
        if self.last_index is None or index > self.last_index:
            self._judge(index, window, found)
            self.last_index = index
        return found

    def _judge(self, index: int, window: Window, found: list[Finding]) -> None:
        at = (index + 1) * self.window_ms + self.lateness_ms
        for key in window:
            if (is_channel(key) or "/" in key) and key not in self.channels:
                channel = key.split("/", 1)[0]
                self.channels[key] = _Channel(self.s, self.s.for_channel(channel))
        for key in sorted(self.channels):
            state = self.channels[key]
            tally = window.get(key) or Tally()
            state.push(tally)
            self._health(key, state, tally, at, found)
            if "/" not in key:
                self._codes(key, state, tally, at, found)
        self.incidents.judge(at, window, found)

    # --- health ---------------------------------------------------------------
    def _health(self, key: str, st: _Channel, tally: Tally, at: int, found: list[Finding]) -> None:
        k = st.knobs
        n, f = st.sums.finished, st.sums.failures
        enter = max(k.degraded_min_failure_rate, st.baseline * k.degraded_baseline_factor)
        enter = max(enter, st.baseline + k.degraded_baseline_margin)
        low, _ = wilson_bounds(f, n, self.s.wilson_z)
        bad = n >= k.min_attempts and low > enter
        if st.level == "healthy":
            if bad:
                # The span is significant; the streak grows only with windows that fail on their own,
                # so one burst sliding through the span counts once per window it covers.
                if tally.failures > enter * tally.finished:
                    st.bad += 1
                if st.bad >= self.s.degrade_after:
                    st.level = "down" if low >= k.down_failure_rate else "degraded"
                    st.good = 0
                    found.append(self._health_finding(key, st, at, low, enter))
                return
            st.bad = 0
            if tally.finished:
                weight = self.s.baseline_alpha * min(1.0, tally.finished / max(k.min_attempts, 1))
                st.baseline = ewma(st.baseline, tally.failures / tally.finished, weight)
            return
        if bad and st.level == "degraded" and low >= k.down_failure_rate:
            st.level = "down"
            found.append(self._health_finding(key, st, at, low, enter))
        if n < k.min_attempts:
            return  # too little traffic proves nothing either way: keep the count
        if f / n <= enter / 2:
            st.good += 1
            if st.good >= self.s.recover_after:
                st.level = "healthy"
                st.bad = 0
                found.append(self._health_finding(key, st, at, low, enter))
        else:
            st.good = 0

    def _health_finding(self, key: str, st: _Channel, at: int, low: float, enter: float) -> Finding:
        channel, _, method = key.partition("/")
        s = st.sums
        severity: Severity = {"healthy": "info", "degraded": "warning", "down": "critical"}[st.level]  # type: ignore[assignment]
        rate = s.failures / s.finished if s.finished else 0.0
        return make_finding(
            at=to_dt(at),
            kind="channel_health",
            state="resolved" if st.level == "healthy" else "open",
            level=st.level,  # type: ignore[arg-type]
            fingerprint=f"channel_health:{key}",
            severity=severity,
            summary=f"channel {key} is {st.level}: {s.failures} of {s.finished} attempts failed "
            f"({rate:.1%}, baseline {st.baseline:.1%})",
            evidence=Evidence(
                figures={
                    "finished": s.finished,
                    "failures": s.failures,
                    "customer_failures": s.customer_failures,
                    "timeouts": s.timeouts,
                    "failure_rate": round(rate, 4),
                    "failure_rate_lower_bound": round(low, 4),
                    "threshold": round(enter, 4),
                    "baseline": round(st.baseline, 4),
                    "mean_latency_ms": round(s.latency_sum / s.latency_n) if s.latency_n else 0,
                    "span_s": self.s.health_span_windows * self.s.window_s,
                }
            ),
            payment=FindingPayment(channel=channel, method=method or None),
        )

    # --- customer error codes ---------------------------------------------------
    def _codes(self, key: str, st: _Channel, tally: Tally, at: int, found: list[Finding]) -> None:
        s = self.s
        n = st.sums.finished
        for code in sorted(set(st.sums.codes) | set(st.codes_open)):
            count = st.sums.codes.get(code, 0)
            base = st.code_baseline.get(code, 0.0)
            threshold = max(base * s.error_code_factor, base + s.error_code_margin)
            low, _ = wilson_bounds(count, n, s.wilson_z)
            spiking = count >= s.error_code_min_count and low > threshold
            if code in st.codes_open:
                if spiking or (n and count / n > threshold / 2):
                    st.codes_open[code] = 0
                    continue
                st.codes_open[code] += 1
                if st.codes_open[code] >= s.recover_after:
                    del st.codes_open[code]
                    found.append(self._code_finding(key, code, "resolved", count, n, base, at))
            elif spiking:
                st.codes_open[code] = 0
                found.append(self._code_finding(key, code, "open", count, n, base, at))
        if tally.finished and not st.codes_open:
            weight = s.baseline_alpha * min(1.0, tally.finished / 20)
            for code in set(st.code_baseline) | set(tally.codes):
                share = tally.codes.get(code, 0) / tally.finished
                st.code_baseline[code] = ewma(st.code_baseline.get(code, 0.0), share, weight)

    def _code_finding(self, channel: str, code: str, state: str, count: int, n: int, base: float, at: int) -> Finding:
        return make_finding(
            at=to_dt(at),
            kind="error_code_spike",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"error_code_spike:{channel}:{code}",
            severity="warning",
            summary=f"customer error {code} on {channel}: {count} of {n} attempts (baseline {base:.1%})"
            if state == "open"
            else f"customer error {code} on {channel} back to normal",
            evidence=Evidence(figures={"code": code, "count": count, "finished": n, "baseline": round(base, 4)}),
            payment=FindingPayment(channel=channel),
        )
