"""Judging closed windows per channel: health, error-code spikes, incident rollups.

Fed complete windows (the sum of every worker's partials) in order, so one judge sees
each channel globally. Each channel keeps running sums over several spans at once (10 s,
1 min, 5 min, 15 min by default; ten bucket tallies each, O(1) per window): a short span
proves a busy channel's outage in seconds, a long one a quiet channel's in minutes.

- Health: a span is evidence when the exact binomial tail of its failures under the entry
  threshold — min(floor, max(baseline × factor, baseline + margin)) — is below
  `significance`, it holds `degrade_after` windows that failed on their own, and
  `min_attempts` finished attempts → degraded (down when significantly above
  `down_failure_rate`). Back to healthy after `recover_after` judgements whose newest
  evidence (spans begun after the change) is significantly below the outage and consistent
  with the threshold.
- Baselines learn only while no span is significantly worse than them, slowly (hours), so
  a slow ramp is never learned as normal; the floor is unhealthy whatever they say.
- Customer failures (error_category user/limit) never count against the channel, but a
  single code's share jumping far above its baseline is an `error_code_spike`, judged on
  the same spans with the same statistics.
- Stuck and duplicate-charged orders are rolled up into incidents by `incidents.py`
  (per channel, per merchant, overall), fed the same windows.
"""

from __future__ import annotations

from collections.abc import Callable

from paywatch.detectors.cardinality import Cap
from paywatch.detectors.incidents import IncidentJudge
from paywatch.detectors.settings import ChannelSettings, DetectorSettings
from paywatch.detectors.stats import binomial_head, binomial_lower_bound, binomial_tail, ewma
from paywatch.detectors.timebase import to_dt
from paywatch.detectors.windows import Span, Tally, Window, is_channel
from paywatch.finding import Evidence, Finding, FindingPayment, Severity, make_finding

# A baseline does not learn while a span is significantly above this fraction of the way from the
# baseline to the entry threshold (for a 2 % baseline: 4.5 %): well before an incident, well above noise.
GUARD = 0.25
PRIOR_ATTEMPTS = 20  # what a baseline's prior is worth, in attempts, while the channel is new


class _Channel:
    __slots__ = (
        "age",
        "baseline",
        "code_baseline",
        "code_learned",
        "codes_open",
        "good",
        "knobs",
        "learned",
        "level",
        "outage",
        "since",
        "spans",
    )

    def __init__(self, settings: DetectorSettings, knobs: ChannelSettings, spans: list[int]) -> None:
        self.knobs = knobs
        self.spans = [Span(windows) for windows in spans]  # shortest first
        self.age = 0  # windows judged
        self.learned = 0  # attempts learned into the baseline failure rate
        self.code_learned = 0  # attempts learned into the error-code baselines
        self.baseline = settings.baseline_prior_failure_rate
        self.code_baseline: dict[str, float] = {}
        # code -> [judgements back to normal in a row, share when opened, windows since opened]
        self.codes_open: dict[str, list] = {}
        self.level = "healthy"
        self.outage = 1.0  # failure rate of the span that last changed the level
        self.good = 0
        self.since = 0  # windows judged since the channel became unhealthy


Count = Callable[[Tally], int]


def _failures(t: Tally) -> int:
    return t.failures


def _occurrences(code: str) -> Count:
    """Counter of one customer error code in a tally."""
    return lambda t: t.codes.get(code, 0)


def strongest(
    spans: list[Span], count: Count, threshold: float, alpha: float, min_n: int, min_count: int = 1, min_marks: int = 0
) -> tuple[float, Span] | None:
    """The span with the strongest evidence that the rate `count / finished` is above `threshold`:
    its p-value (the chance of counting this many if the rate were the threshold) and the span, or
    None when no span's p-value is below `alpha`. A span proves nothing with fewer than `min_n`
    finished attempts, `min_count` counted ones or `min_marks` flagged windows."""
    best: tuple[float, Span] | None = None
    for span in spans:
        n = span.sums.finished
        k = count(span.sums)
        if n < min_n or k < min_count or k <= threshold * n or span.marks < min_marks:
            continue
        p = binomial_tail(k, n, threshold, alpha)
        if p < alpha and (best is None or p < best[0]):
            best = (p, span)
    return best


def back_to_normal(
    spans: list[Span], count: Count, enter: float, outage: float, alpha: float, lenient: float, min_n: int
) -> bool | None:
    """What the newest evidence says about a rate that was above `enter` (at `outage`). Spans are read
    from the shortest: one significantly below `outage` (p-value under `alpha`) and not even leniently
    significantly above `enter` (p-value under `lenient`) says True (recovered); the shortest with
    `min_n` attempts significantly above `enter` says False (still failing). A span saying neither
    defers to the next longer one, which holds more evidence. None: nothing conclusive, e.g. too
    little traffic. The hysteresis is in the evidence: in, a rate significantly above the threshold;
    out, one significantly below the outage and consistent with the threshold, `recover_after`
    judgements in a row."""
    newest = True
    for span in spans:
        n = span.sums.finished
        if n < min_n:
            continue
        k = count(span.sums)
        above = binomial_tail(k, n, enter, lenient) if k > enter * n else 1.0
        if above >= lenient and binomial_head(k, n, outage, alpha) < alpha:
            return True
        if newest and above < alpha:
            return False
        newest = False  # longer spans still hold the incident: only a recovered one is news
    return None


class ChannelJudge:
    def __init__(self, settings: DetectorSettings, overall: bool = True) -> None:
        self.s = settings
        self.window_ms = int(settings.window_s * 1000)
        self.lateness_ms = int(settings.allowed_lateness_s * 1000)
        self.channels: dict[str, _Channel] = {}
        self.channel_cap = Cap("channels", settings.max_channels, "max_channels")
        # `overall`: this judge owns the all-channel incident scope (one judge of several does)
        self.incidents = IncidentJudge(settings, overall)
        self.last_index: int | None = None
        self.warmup_windows = round(settings.baseline_warmup_s / settings.window_s)
        self.window_weight = min(1.0, settings.window_s / settings.baseline_tau_s)
        self.span_windows = sorted({max(1, round(span / settings.window_s)) for span in settings.health_spans_s})
        self._gap_limit = max(
            self.span_windows[-1], settings.incident_span_windows, settings.merchant_span_windows
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
                if not self.channel_cap.admits(len(self.channels), key, at, found):
                    continue  # counted, not judged; its orders still count in the platform-wide rollup
                channel = key.split("/", 1)[0]
                self.channels[key] = _Channel(self.s, self.s.for_channel(channel), self.span_windows)
        for key in sorted(self.channels):
            state = self.channels[key]
            tally = window.get(key) or Tally()
            self._health(key, state, tally, at, found)
            if "/" not in key:
                self._codes(key, state, tally, at, found)
        self.incidents.judge(at, window, found, self.channels)

    # --- health ---------------------------------------------------------------
    def _health(self, key: str, st: _Channel, tally: Tally, at: int, found: list[Finding]) -> None:
        k, s = st.knobs, self.s
        alpha = s.significance
        st.age += 1
        relative = max(st.baseline * k.degraded_baseline_factor, st.baseline + k.degraded_baseline_margin)
        enter = min(k.degraded_min_failure_rate, relative)  # the floor is unhealthy whatever the baseline
        # A window "fails on its own" when its own failure share is above the threshold: a span counts as
        # evidence only if it holds `degrade_after` of them, so one short burst never pages.
        for span in st.spans:
            span.push(tally, tally.failures > enter * tally.finished)
        worst = strongest(st.spans, _failures, enter, alpha, k.min_attempts, min_marks=s.degrade_after)
        if st.level == "healthy":
            if worst is not None:
                p, span = worst
                down = self._down(st)
                if down is not None:
                    p, span = binomial_tail(down.sums.failures, down.sums.finished, enter), down
                st.level = "degraded" if down is None else "down"
                st.outage = span.sums.failures / span.sums.finished
                st.good = st.since = 0
                found.append(self._health_finding(key, st, at, span, p, enter))
            elif tally.finished and self._learnable(st, _failures, st.baseline + (enter - st.baseline) * GUARD):
                weight = self._weight(st.learned, tally.finished, k.min_attempts)
                st.baseline = ewma(st.baseline, tally.failures / tally.finished, weight)
                st.learned += tally.finished
            return
        down = self._down(st) if worst is not None and st.level == "degraded" else None
        if down is not None:
            p, span = binomial_tail(down.sums.failures, down.sums.finished, enter), down
            st.level = "down"
            st.outage = span.sums.failures / span.sums.finished
            found.append(self._health_finding(key, st, at, span, p, enter))
        # recovery is judged only on spans that began after the channel became unhealthy
        st.since += 1
        recent = [span for span in st.spans if span.windows <= st.since]
        normal = back_to_normal(recent, _failures, enter, st.outage, alpha, s.lenient_significance, k.min_attempts)
        if normal is None:
            return  # too little traffic proves nothing either way: keep the count
        st.good = st.good + 1 if normal else 0
        if st.good >= s.recover_after:
            st.level = "healthy"
            span = next(sp for sp in st.spans if sp.sums.finished >= k.min_attempts)
            p = binomial_head(span.sums.failures, span.sums.finished, st.outage)
            found.append(self._health_finding(key, st, at, span, p, enter))
            for sp in st.spans:
                sp.clear()  # what the outage counted must not re-open it

    def _down(self, st: _Channel) -> Span | None:
        """The span showing an unhealthy channel `down`: one that counts as evidence (`min_attempts`,
        `degrade_after` failing windows) with a failure rate above `down_failure_rate` at
        `lenient_significance`. The channel is already proven unhealthy; how bad it is needs less
        proof (100 failures out of 100 say down, though at 1e-5 they cannot tell 100 % from 90 %)."""
        rate, lenient = st.knobs.down_failure_rate, self.s.lenient_significance
        for span in st.spans:
            n, f = span.sums.finished, span.sums.failures
            evidence = n >= st.knobs.min_attempts and span.marks >= self.s.degrade_after
            if evidence and f > rate * n and binomial_tail(f, n, rate, lenient) < lenient:
                return span
        return None

    def _weight(self, learned: int, finished: int, min_n: int) -> float:
        """EWMA weight of one window of `finished` attempts, after `learned` ones: the running mean of
        the attempts so far while the baseline is young (its prior counts as PRIOR_ATTEMPTS), then
        1/`baseline_tau_s` per second (less for windows with fewer than `min_n` attempts). Slow on
        purpose: a baseline that follows a 12-minute ramp has learned the incident."""
        steady = self.window_weight * min(1.0, finished / max(min_n, 1))
        return max(steady, finished / (learned + finished + PRIOR_ATTEMPTS))

    def _warming(self, st: _Channel) -> bool:
        """A new channel's error-code baselines learn from every window at first: there is no baseline
        yet to be significantly worse than, and code spikes are not judged until there is. (The failure
        rate starts from a prior and is always gated: the floor needs no baseline.)"""
        return st.age <= self.warmup_windows

    def _learnable(self, st: _Channel, count: Count, worse: float) -> bool:
        """A baseline learns from a window only while no span (with `min_attempts`) is significantly
        worse than `worse` (p-value under `lenient_significance`): a slow ramp is never
        learned as the new normal. Lenient on purpose: a window wrongly left out costs nothing."""
        alpha, min_n = self.s.lenient_significance, st.knobs.min_attempts
        for span in st.spans:
            n, k = span.sums.finished, count(span.sums)
            if n >= min_n and k > worse * n and binomial_tail(k, n, worse, alpha) < alpha:
                return False
        return True

    def _health_finding(self, key: str, st: _Channel, at: int, span: Span, p: float, enter: float) -> Finding:
        channel, _, method = key.partition("/")
        s = span.sums
        severity: Severity = {"healthy": "info", "degraded": "warning", "down": "critical"}[st.level]  # type: ignore[assignment]
        rate = s.failures / s.finished if s.finished else 0.0
        span_s = span.windows * self.s.window_s
        lenient = self.s.lenient_significance
        return make_finding(
            at=to_dt(at),
            kind="channel_health",
            state="resolved" if st.level == "healthy" else "open",
            level=st.level,  # type: ignore[arg-type]
            fingerprint=f"channel_health:{key}",
            severity=severity,
            summary=f"channel {key} is {st.level}: {s.failures} of {s.finished} attempts failed in {span_s:g} s "
            f"({rate:.1%}, baseline {st.baseline:.1%})",
            evidence=Evidence(
                figures={
                    "finished": s.finished,
                    "failures": s.failures,
                    "customer_failures": s.customer_failures,
                    "timeouts": s.timeouts,
                    "failure_rate": round(rate, 4),
                    "failure_rate_lower_bound": round(binomial_lower_bound(s.failures, s.finished, lenient), 4),
                    "p_value": float(f"{p:.3g}"),
                    "threshold": round(enter, 4),
                    "baseline": round(st.baseline, 4),
                    "mean_latency_ms": round(s.latency_sum / s.latency_n) if s.latency_n else 0,
                    "span_s": span_s,
                }
            ),
            payment=FindingPayment(channel=channel, method=method or None),
        )

    # --- customer error codes ---------------------------------------------------
    def _codes(self, key: str, st: _Channel, tally: Tally, at: int, found: list[Finding]) -> None:
        """The same evidence as health, per customer error code's share of finished attempts."""
        s = self.s
        alpha, min_n = s.significance, st.knobs.min_attempts
        longest = st.spans[-1].sums  # holds every code any span holds
        warming = self._warming(st)
        for code in sorted(set(longest.codes) | set(st.codes_open)):
            base = st.code_baseline.get(code, 0.0)
            threshold = max(base * s.error_code_factor, base + s.error_code_margin)
            count = _occurrences(code)
            spike = None if warming else strongest(st.spans, count, threshold, alpha, min_n, s.error_code_min_count)
            state = st.codes_open.get(code)
            if state is None:
                if spike is not None:
                    span = spike[1]
                    share = count(span.sums) / span.sums.finished
                    st.codes_open[code] = [0, share, 0]
                    found.append(self._code_finding(key, code, "open", span, base, at))
                continue
            state[2] += 1
            recent = [span for span in st.spans if span.windows <= state[2]]
            normal = back_to_normal(recent, count, threshold, state[1], alpha, s.lenient_significance, min_n)
            if spike is not None or normal is False:
                state[0] = 0
            elif normal:
                state[0] += 1
                if state[0] >= s.recover_after:
                    del st.codes_open[code]
                    span = next(sp for sp in st.spans if sp.sums.finished >= min_n)
                    found.append(self._code_finding(key, code, "resolved", span, base, at))
        if tally.finished:
            weight = self._weight(st.code_learned, tally.finished, min_n)
            st.code_learned += tally.finished
            for code in set(st.code_baseline) | set(tally.codes):
                if code in st.codes_open:
                    continue
                base = st.code_baseline.get(code, 0.0)
                threshold = max(base * s.error_code_factor, base + s.error_code_margin)
                if warming or self._learnable(st, _occurrences(code), base + (threshold - base) * GUARD):
                    st.code_baseline[code] = ewma(base, tally.codes.get(code, 0) / tally.finished, weight)

    def _code_finding(self, channel: str, code: str, state: str, span: Span, base: float, at: int) -> Finding:
        n, count = span.sums.finished, span.sums.codes.get(code, 0)
        span_s = span.windows * self.s.window_s
        return make_finding(
            at=to_dt(at),
            kind="error_code_spike",
            state=state,  # type: ignore[arg-type]
            fingerprint=f"error_code_spike:{channel}:{code}",
            severity="warning",
            summary=f"customer error {code} on {channel}: {count} of {n} attempts in {span_s:g} s (baseline {base:.1%})"
            if state == "open"
            else f"customer error {code} on {channel} back to normal",
            evidence=Evidence(
                figures={"code": code, "count": count, "finished": n, "baseline": round(base, 4), "span_s": span_s}
            ),
            payment=FindingPayment(channel=channel),
        )
