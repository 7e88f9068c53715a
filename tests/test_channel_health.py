"""The channel judge on closed windows, as the Kafka aggregator feeds it: evidence over several spans,
exact binomial tails, baselines a ramp cannot poison, recovery with hysteresis, error-code shares.

Windows are built directly (a Tally per 2-second window), so a simulated day takes seconds; every
random stream is seeded, so every run judges the same traffic.
"""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

from paywatch.detectors.channel_health import ChannelJudge
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.stats import binomial_head, binomial_tail
from paywatch.detectors.windows import Span, Tally
from paywatch.finding import Finding

WINDOW_S = 2.0


def exact_tail(k: int, n: int, p: Fraction) -> Fraction:
    return sum((comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)), Fraction(0))


def test_binomial_tail_matches_the_exact_sum_in_rationals():
    for k, n, p in [(2, 3, "0.15"), (5, 6, "0.15"), (60, 60, "0.15"), (12, 40, "0.1"), (0, 5, "0.3"), (9, 9, "0.5")]:
        want = float(exact_tail(k, n, Fraction(p)))
        assert abs(binomial_tail(k, n, float(p)) - want) <= 1e-12 * max(want, 1e-300), (k, n, p)
    # two failures out of three at a 15 % floor: 6 % -- common; sixty out of sixty: never by chance
    assert binomial_tail(2, 3, 0.15) > 0.06
    assert binomial_tail(60, 60, 0.15) < 1e-40
    assert binomial_head(0, 7, 0.86) == binomial_tail(7, 7, 0.14)


def test_binomial_tail_is_exact_and_stops_once_past_the_bar():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 120)
        p = rng.uniform(0.001, 0.999)
        k = rng.randint(int(n * p) + 1, n) if int(n * p) < n else n  # the judge asks only above n·p
        want = float(exact_tail(k, n, Fraction(p)))
        assert abs(binomial_tail(k, n, p) - want) <= 1e-9 * want + 1e-300, (k, n, p)
        stopped = binomial_tail(k, n, p, stop=1e-3)
        assert (stopped < 1e-3) == (want < 1e-3), (k, n, p, stopped, want)


def test_a_span_sums_its_latest_windows_with_bounded_memory():
    rng = random.Random(2)
    for windows in (1, 2, 5, 7, 30, 60):
        counts = [rng.randint(0, 9) for _ in range(rng.randint(1, 400))]
        _check_span(windows, counts)


def _check_span(windows: int, counts: list[int]) -> None:
    span = Span(windows)
    for i, c in enumerate(counts):
        t = Tally()
        t.finished, t.failures = c, c // 2
        if c:
            t.codes["LIMIT_EXCEEDED"] = c // 3 or 0
            if not t.codes["LIMIT_EXCEEDED"]:
                del t.codes["LIMIT_EXCEEDED"]
        span.push(t, marked=c > 5)
        covered = len(span.ring) * span.bucket + span.filled
        assert windows - span.bucket < covered <= windows or covered == i + 1
        latest = counts[i + 1 - covered : i + 1]
        assert span.sums.finished == sum(latest)
        assert span.sums.failures == sum(c // 2 for c in latest)
        assert span.sums.codes.get("LIMIT_EXCEEDED", 0) == sum(c // 3 for c in latest)
        assert span.marks == sum(1 for c in latest if c > 5)
        assert len(span.ring) <= 10  # a 15-minute span costs ten tallies, not 450


class Channel:
    """Seeded traffic of one channel, `per_s` attempts a second (Poisson), judged window by window."""

    def __init__(self, settings: DetectorSettings | None = None, seed: int = 1, name: str = "bank_q") -> None:
        self.judge = ChannelJudge(settings or DetectorSettings())
        self.rng = random.Random(seed)
        self.name = name
        self.index = 0
        self.next_at = 0.0
        self.findings: list[Finding] = []

    def run(self, seconds: float, per_s: float, fail: float, codes: dict[str, float] | None = None) -> None:
        """`fail`: share of channel failures; `codes`: customer error codes and their shares."""
        rng, end = self.rng, (self.index * WINDOW_S) + seconds
        self.next_at = self.index * WINDOW_S + rng.expovariate(per_s)  # Poisson: memoryless
        while self.index * WINDOW_S < end:
            t, close = Tally(), (self.index + 1) * WINDOW_S
            while self.next_at < close:
                t.attempts += 1
                t.finished += 1
                r = rng.random()
                if r < fail:
                    t.failures += 1
                else:
                    r -= fail
                    for code, share in (codes or {}).items():
                        if r < share:
                            t.customer_failures += 1
                            t.codes[code] = t.codes.get(code, 0) + 1
                            break
                        r -= share
                self.next_at += rng.expovariate(per_s)
            self.findings += self.judge.on_window(self.index, {self.name: t} if t.attempts else {})
            self.index += 1

    @property
    def now(self) -> float:
        return self.index * WINDOW_S

    def health(self) -> list[tuple[str, float]]:
        """(level, seconds since the start of the run) of every channel_health change."""
        return [
            (f.finding.level, f.timestamp.timestamp() - 2.0)  # stamped at window end + allowed lateness
            for f in self.findings
            if f.finding.kind == "channel_health"
        ]

    def spikes(self, state: str = "open") -> list[Finding]:
        return [f for f in self.findings if f.finding.kind == "error_code_spike" and f.finding.state == state]


CUSTOMER = {"WRONG_PASSWORD": 0.04, "INSUFFICIENT_FUNDS": 0.03, "LIMIT_EXCEEDED": 0.008}


def test_quiet_channels_with_5_to_10_percent_normal_failures_stay_quiet_for_a_day():
    for seed, per_s, fail in [(1, 1 / 20, 0.10), (2, 1 / 10, 0.10), (3, 1 / 3, 0.08), (4, 1 / 15, 0.05)]:
        ch = Channel(seed=seed)
        ch.run(86_400, per_s, fail, CUSTOMER)
        assert ch.findings == [], (per_s, fail, [f.finding.summary for f in ch.findings])
        # the baseline learned from the traffic (never above it: the guard errs on the low side)
        assert 0.025 < ch.judge.channels["bank_q"].baseline <= fail + 0.01


def test_two_of_three_is_not_an_outage_sixty_of_sixty_over_twelve_minutes_is():
    ch = Channel()
    ch.run(3600, 1 / 12, 0.05)
    ch.run(30, 0.1, 0.67)  # a couple of failures close together: nothing
    ch.run(600, 1 / 12, 0.05)
    assert ch.health() == []
    start = ch.now
    ch.run(720, 1 / 12, 1.0)  # sixty attempts in twelve minutes, all failing
    [(level, at)] = ch.health()
    assert level == "degraded" and at - start <= 180, (level, at - start)


def test_a_channel_at_one_attempt_per_20_s_failing_everything_pages_within_5_min_and_recovers_within_10():
    for seed in range(1, 6):
        ch = Channel(seed=seed)
        ch.run(3600, 1 / 20, 0.06, CUSTOMER)
        start = ch.now
        ch.run(900, 1 / 20, 1.0, CUSTOMER)
        end = ch.now
        ch.run(1800, 1 / 20, 0.06, CUSTOMER)
        changes = ch.health()
        assert [c[0] for c in changes] in (["degraded", "healthy"], ["degraded", "down", "healthy"]), (seed, changes)
        assert changes[0][1] - start <= 300, (seed, changes)
        assert 0 < changes[-1][1] - end <= 600, (seed, changes)


def test_recovery_waits_for_evidence_of_recovery_not_for_silence():
    ch = Channel(seed=7)
    ch.run(3600, 1 / 20, 0.05)
    ch.run(600, 1 / 20, 1.0)
    assert [c[0] for c in ch.health()] == ["degraded"]
    ch.run(1800, 0.0001, 0.0)  # the channel goes silent: no evidence either way
    assert [c[0] for c in ch.health()] == ["degraded"]
    ch.run(1800, 1 / 20, 0.0)
    assert [c[0] for c in ch.health()] == ["degraded", "healthy"]


def test_a_busy_channel_failing_half_its_attempts_pages_within_2_min():
    ch = Channel(seed=3)
    ch.run(1800, 0.5, 0.01, CUSTOMER)
    start = ch.now
    ch.run(600, 0.5, 0.5, CUSTOMER)
    assert ch.health() and ch.health()[0][0] == "degraded" and ch.health()[0][1] - start <= 120


def test_a_slow_ramp_is_not_learned_as_the_new_normal():
    """2 % -> 50 % over 12 minutes at 20 attempts/s: pages within 2 min of crossing 15 %, and the
    baseline never learns the ramp."""
    ch = Channel(seed=5)
    ch.run(3600, 20, 0.02, CUSTOMER)
    start = ch.now
    baselines = []
    for minute in range(12):
        for step in range(6):
            fail = 0.02 + 0.48 * (minute * 60 + step * 10) / 720
            ch.run(10, 20, fail, CUSTOMER)
            baselines.append(ch.judge.channels["bank_q"].baseline)
    crossing = start + (0.15 - 0.02) / 0.48 * 720
    [(level, at), *_] = ch.health()
    assert level in ("degraded", "down") and at <= crossing + 120, at - crossing
    assert max(baselines) < 0.03, max(baselines)


def test_the_floor_is_unhealthy_whatever_the_baseline_says():
    # a baseline that starts high (as if poisoned) does not let 25 % failures pass as normal
    ch = Channel(DetectorSettings(baseline_prior_failure_rate=0.3), seed=2)
    ch.run(600, 5, 0.25)
    assert ch.health() and ch.health()[0][0] == "degraded"


def test_a_three_second_blip_on_a_busy_channel_never_pages():
    ch = Channel(seed=4)
    ch.run(600, 50, 0.01)
    ch.run(4, 50, 1.0)
    ch.run(600, 50, 0.01)
    assert ch.health() == []


def test_an_error_code_spike_on_a_modest_channel_pages_within_2_min_and_never_touches_health():
    ch = Channel(seed=9)
    ch.run(3600, 0.5, 0.01, CUSTOMER)
    start = ch.now
    ch.run(900, 0.5, 0.01, {**CUSTOMER, "LIMIT_EXCEEDED": 0.30})
    [spike] = ch.spikes()
    assert spike.finding.evidence.figures["code"] == "LIMIT_EXCEEDED"
    assert spike.timestamp.timestamp() - 2.0 - start <= 120
    assert ch.health() == []  # the customers' failures, not the channel's
    end = ch.now
    ch.run(1800, 0.5, 0.01, CUSTOMER)
    [back] = ch.spikes("resolved")
    assert back.timestamp.timestamp() - end <= 1200


def test_memory_per_channel_does_not_grow_with_time():
    ch = Channel(seed=6)
    ch.run(7200, 3, 0.02, CUSTOMER)
    state = ch.judge.channels["bank_q"]
    assert [len(span.ring) for span in state.spans] == [4, 9, 9, 9, 9]
    assert set(state.code_baseline) == set(CUSTOMER)
