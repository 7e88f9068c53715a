"""Detectors on hand-built event sequences: the issue's semantics, one rule per test."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.contract import Event, EventMeta, Heartbeat, Payment, Service, ServiceInstance
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.settings import ChannelSettings, DetectorSettings
from paywatch.finding import Finding

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def pay(
    t: float,
    action: str,
    order: str,
    attempt: str | None = None,
    channel: str | None = "alipay",
    outcome: str | None = None,
    event_id: str | None = None,
    **payment,
) -> Event:
    return Event(
        timestamp=T0 + timedelta(seconds=t),
        event=EventMeta(id=event_id or f"ev-{next(_ids)}", dataset="paywatch.payment", action=action, outcome=outcome),
        service=Service(name="checkout", instance=ServiceInstance(id="checkout-1")),
        payment=Payment(order_id=order, attempt_id=attempt, channel=channel, **payment),
    )


def beat(t: float, service: str, instance: str, interval_s: float = 5.0, status: str = "up", seq: int = 0) -> Event:
    return Event(
        timestamp=T0 + timedelta(seconds=t),
        event=EventMeta(id=f"hb-{next(_ids)}", dataset="paywatch.heartbeat"),
        service=Service(name=service, instance=ServiceInstance(id=instance)),
        heartbeat=Heartbeat(interval_s=interval_s, seq=seq, status=status),
    )


class Run:
    """Drive an engine like replay does: tick every second of event time, then feed."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.engine = DetectionEngine(settings or DetectorSettings())
        self.now = 0.0
        self.findings: list[Finding] = []

    def until(self, t: float) -> list[Finding]:
        out: list[Finding] = []
        second = int(self.now) + 1 if self.now else 0
        while second <= t:
            out += self.engine.tick(T0 + timedelta(seconds=second))
            second += 1
        self.now = max(self.now, t)
        self.findings += out
        return out

    def feed(self, event: Event) -> list[Finding]:
        out = self.engine.feed(event)
        self.findings += out
        return out

    def play(self, events: list[Event]) -> list[Finding]:
        start = len(self.findings)
        for e in sorted(events, key=lambda e: e.timestamp):
            self.until((e.timestamp - T0).total_seconds())
            self.feed(e)
        return self.findings[start:]

    def of(self, kind: str, state: str | None = None) -> list[Finding]:
        return [f for f in self.findings if f.finding.kind == kind and (state is None or f.finding.state == state)]


def secs(f: Finding) -> float:
    return (f.timestamp - T0).total_seconds()


# --- paid but pending -----------------------------------------------------------------


def test_paid_but_pending_opens_exactly_at_grace_and_resolves_on_order_paid():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1"), pay(3, "channel_callback", "o1", "a1", outcome="success")])
    r.until(62.9)
    assert r.of("paid_but_pending") == []  # grace 60 s runs to t=63
    r.until(63)
    [opened] = r.of("paid_but_pending")
    assert opened.finding.state == "open" and secs(opened) == 63
    assert opened.finding.fingerprint == "paid_but_pending:o1"
    assert opened.payment.order_id == "o1" and opened.payment.channel == "alipay"
    r.play([pay(80, "order_paid", "o1")])
    assert [f.finding.state for f in r.of("paid_but_pending")] == ["open", "resolved"]


def test_order_paid_before_the_callback_means_nothing_is_pending():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1"),
            pay(1, "order_paid", "o1"),
            pay(2, "channel_callback", "o1", "a1", outcome="success"),
        ]
    )
    r.until(300)
    assert r.of("paid_but_pending") == []


def test_late_order_paid_inside_grace_prevents_the_finding():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1", outcome="success"), pay(59, "order_paid", "o1")])
    r.until(200)
    assert r.of("paid_but_pending") == []


def test_synchronous_success_on_request_counts_as_a_charge():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1", outcome="success")])
    r.until(60)
    assert len(r.of("paid_but_pending", "open")) == 1


def test_query_result_success_counts_as_a_charge():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1"), pay(130, "channel_query_result", "o1", "a1", outcome="success")])
    r.until(190)
    assert [secs(f) for f in r.of("paid_but_pending", "open")] == [190]


def test_per_channel_grace_override():
    s = DetectorSettings(channels={"bank_b": ChannelSettings(paid_grace_s=300)})
    r = Run(s)
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1", channel="bank_b", outcome="success"),
            pay(0, "payment_requested", "o2", "a2", channel="alipay", outcome="success"),
        ]
    )
    r.until(299)
    assert [f.payment.order_id for f in r.of("paid_but_pending")] == ["o2"]
    r.until(300)
    assert [f.payment.order_id for f in r.of("paid_but_pending")] == ["o2", "o1"]


def test_repeated_event_changes_nothing():
    r = Run()
    callback = pay(2, "channel_callback", "o1", "a1", outcome="success", event_id="cb-1")
    r.play([pay(0, "payment_requested", "o1", "a1"), callback])
    before = len(r.findings)
    assert r.feed(callback) == [] and r.feed(callback) == []
    r.until(100)
    assert len(r.of("paid_but_pending")) == 1
    assert r.of("duplicate_charge") == []
    assert len(r.findings) == before + 1


def test_status_only_moves_forward_failure_after_success_is_ignored():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1"),
            pay(5, "channel_callback", "o1", "a1", outcome="success"),
            pay(6, "channel_query_result", "o1", "a1", outcome="failure", error_code="SYSTEMERROR"),
        ]
    )
    r.until(70)
    assert len(r.of("paid_but_pending", "open")) == 1  # still charged
    attempt = r.engine.orders.orders["o1"].attempts[0]
    assert attempt.event_id is not None and attempt.state == 2


def test_success_after_failure_wins_because_the_money_moved():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1"),
            pay(5, "channel_callback", "o1", "a1", outcome="failure", error_code="TIMEOUT", error_category="channel"),
            pay(9, "channel_query_result", "o1", "a1", outcome="success"),
        ]
    )
    r.until(70)
    assert len(r.of("paid_but_pending", "open")) == 1


def test_out_of_order_callback_before_request_is_one_attempt():
    r = Run()
    r.play([pay(1, "channel_callback", "o1", "a1", outcome="success"), pay(0.5, "order_paid", "o1")])
    r.feed(pay(0, "payment_requested", "o1", "a1"))  # arrives last
    r.until(400)
    assert r.of("unknown_attempt") == [] and r.of("paid_but_pending") == []
    assert len(r.engine.orders.orders["o1"].attempts) == 1


def test_charge_on_a_closed_order_is_paid_but_pending():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1"),
            pay(900, "order_closed", "o1"),
            pay(901, "channel_query_result", "o1", "a1", outcome="success"),
        ]
    )
    r.until(961)
    assert len(r.of("paid_but_pending", "open")) == 1


# --- unknown attempts -----------------------------------------------------------------


def test_unknown_attempt_requests_a_query_after_query_after_and_resolves_on_outcome():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1", channel="wechat")])
    r.until(119)
    assert r.of("unknown_attempt") == []
    r.until(120)
    [req] = r.of("unknown_attempt")
    assert req.finding.fingerprint == "unknown_attempt:o1:a1" and secs(req) == 120
    assert req.payment.attempt_id == "a1" and req.payment.channel == "wechat"
    r.play(
        [
            pay(
                150,
                "channel_query_result",
                "o1",
                "a1",
                channel="wechat",
                outcome="failure",
                error_code="ORDERCLOSED",
                error_category="channel",
            )
        ]
    )
    assert [f.finding.state for f in r.of("unknown_attempt")] == ["open", "resolved"]


def test_not_found_inside_grace_is_unknown_not_failure():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1"),
            pay(130, "channel_query_result", "o1", "a1", outcome="failure", error_code="TRADE_NOT_EXIST"),
        ]
    )
    attempt = r.engine.orders.orders["o1"].attempts[0]
    assert attempt.state == 0 and attempt.querying  # still unknown, the query stays requested
    assert r.of("unknown_attempt", "resolved") == []
    r.play([pay(700, "channel_query_result", "o1", "a1", outcome="failure", error_code="TRADE_NOT_EXIST")])
    assert attempt.state == 1  # past the grace, not found means it never landed
    assert len(r.of("unknown_attempt", "resolved")) == 1


def test_channel_switch_within_one_order_is_not_a_duplicate():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1", channel="alipay"),
            pay(20, "payment_requested", "o1", "a2", channel="wechat", amount_minor=1500),
            pay(22, "channel_callback", "o1", "a2", channel="wechat", outcome="success", amount_minor=1500),
            pay(23, "order_paid", "o1"),
        ]
    )
    r.until(200)
    assert r.of("duplicate_charge") == [] and r.of("paid_but_pending") == []
    # the abandoned alipay attempt is still asked about: it may yet have been charged
    assert [f.payment.attempt_id for f in r.of("unknown_attempt")] == ["a1"]


# --- duplicate charges ------------------------------------------------------------------


def test_two_successful_attempts_across_channels_with_different_amounts_is_a_duplicate():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1", channel="alipay", amount_minor=1000, currency="CNY"),
            pay(
                2,
                "channel_callback",
                "o1",
                "a1",
                channel="alipay",
                outcome="success",
                amount_minor=1000,
                currency="CNY",
                event_id="cb-a1",
            ),
            pay(70, "payment_requested", "o1", "a2", channel="wechat", amount_minor=1200, currency="CNY"),
            pay(
                72,
                "channel_callback",
                "o1",
                "a2",
                channel="wechat",
                outcome="success",
                amount_minor=1200,
                currency="CNY",
                event_id="cb-a2",
            ),
        ]
    )
    [dup] = r.of("duplicate_charge")
    assert dup.finding.state == "open" and secs(dup) == 72
    assert dup.finding.fingerprint == "duplicate_charge:o1"
    assert dup.payment.channel == "alipay"  # the channel whose charge the customer was not shown
    assert [(a.attempt_id, a.channel, a.amount_minor) for a in dup.finding.evidence.attempts] == [
        ("a1", "alipay", 1000),
        ("a2", "wechat", 1200),
    ]
    assert dup.finding.evidence.event_ids == ["cb-a1", "cb-a2"]
    # a third charge updates the same finding
    r.play([pay(90, "channel_callback", "o1", "a3", channel="alipay", outcome="success", amount_minor=1000)])
    assert [len(f.finding.evidence.attempts) for f in r.of("duplicate_charge")] == [2, 3]
    assert {f.finding.fingerprint for f in r.of("duplicate_charge")} == {"duplicate_charge:o1"}


def test_refunding_the_extra_charge_resolves_the_duplicate():
    r = Run()
    r.play(
        [
            pay(0, "payment_requested", "o1", "a1", outcome="success"),
            pay(5, "payment_requested", "o1", "a2", outcome="success"),
            pay(6, "order_paid", "o1"),
            pay(600, "refund_succeeded", "o1", "a2"),
        ]
    )
    assert [f.finding.state for f in r.of("duplicate_charge")] == ["open", "resolved"]


# --- channel health ---------------------------------------------------------------------


def _traffic(
    r: Run,
    start: float,
    seconds: int,
    per_s: int,
    fail_ratio: float,
    channel: str = "bank_b",
    category: str = "channel",
    code: str = "BANK_ERROR",
) -> None:
    """`per_s` attempts a second; every k-th fails, deterministically."""
    events = []
    period = round(1 / fail_ratio) if fail_ratio else 0
    for s in range(seconds):
        for i in range(per_s):
            t = start + s + i / per_s
            oid = f"{channel}-{start}-{s}-{i}"
            n = s * per_s + i
            fails = fail_ratio >= 1 or (period and n % period == 0)
            if fails:
                events.append(
                    pay(
                        t,
                        "payment_requested",
                        oid,
                        "a",
                        channel=channel,
                        outcome="failure",
                        error_code=code,
                        error_category=category,
                    )
                )
            else:
                events.append(pay(t, "payment_requested", oid, "a", channel=channel, outcome="success"))
                events.append(pay(t + 0.2, "order_paid", oid))
    r.play(events)


def health(r: Run, channel: str = "bank_b") -> list[tuple[str, str, float]]:
    return [(f.finding.state, f.finding.level, secs(f)) for f in r.of("channel_health") if f.payment.channel == channel]


def test_two_failures_out_of_three_is_not_an_outage():
    r = Run()
    events = []
    for k in range(150):  # a low-volume channel: one attempt every 2 s
        t = k * 2.0
        failing = k in (100, 101) or k in (120, 121)
        events.append(
            pay(
                t,
                "payment_requested",
                f"o{k}",
                "a",
                outcome="failure" if failing else "success",
                error_category="channel" if failing else None,
            )
        )
    r.play(events)
    r.until(320)
    # spans of 5 attempts with 2 failures: the Wilson bound stays far below the threshold
    assert r.of("channel_health") == []


def test_channel_down_is_degraded_quickly_and_recovers_with_hysteresis_without_flapping():
    r = Run()
    _traffic(r, 0, 300, 20, 0.02)  # five minutes of normal traffic teach the baseline
    _traffic(r, 300, 120, 20, 1.0)  # everything fails for two minutes
    _traffic(r, 420, 300, 20, 0.02)
    r.until(730)
    changes = health(r)
    assert [c[:2] for c in changes] in (
        [("open", "degraded"), ("open", "down"), ("resolved", "healthy")],
        [("open", "down"), ("resolved", "healthy")],
    )
    assert changes[0][2] - 300 <= 30
    assert 0 < changes[-1][2] - 420 <= 120


def test_a_blip_shorter_than_the_sustain_never_pages():
    r = Run()
    _traffic(r, 0, 120, 20, 0.02)
    _traffic(r, 120, 3, 20, 1.0)  # three seconds of failures
    _traffic(r, 123, 120, 20, 0.02)
    r.until(250)
    assert health(r) == []


def test_customer_failures_are_excluded_from_health_but_a_code_jump_is_a_finding():
    r = Run(DetectorSettings(baseline_warmup_s=60))
    _traffic(r, 0, 120, 20, 0.02, category="user", code="INSUFFICIENT_FUNDS")
    _traffic(r, 120, 60, 20, 0.5, category="limit", code="LIMIT_EXCEEDED")
    r.until(190)
    assert health(r) == []
    spikes = r.of("error_code_spike", "open")
    assert [(f.payment.channel, f.finding.evidence.figures["code"]) for f in spikes] == [("bank_b", "LIMIT_EXCEEDED")]
    assert 120 < secs(spikes[0]) <= 135


def test_health_by_method_judges_each_method_too():
    r = Run(DetectorSettings(health_by_method=True))
    events = []
    for s in range(60):
        for i in range(10):
            events.append(pay(s + i / 10, "payment_requested", f"q{s}-{i}", "a", method="qr", outcome="success"))
            events.append(
                pay(
                    s + i / 10,
                    "payment_requested",
                    f"p{s}-{i}",
                    "a",
                    method="app",
                    outcome="failure",
                    error_category="channel",
                )
            )
    r.play(events)
    r.until(70)
    keys = {f.finding.fingerprint for f in r.of("channel_health", "open")}
    assert "channel_health:alipay/app" in keys and "channel_health:alipay/qr" not in keys


# --- incident rollups -------------------------------------------------------------------


def test_stuck_orders_page_once_per_channel_not_once_per_order():
    r = Run()
    events = []
    for i in range(40):
        events.append(pay(i, "payment_requested", f"o{i}", "a", channel="alipay"))
        events.append(pay(i + 1, "channel_query_result", f"o{i}", "a", channel="alipay", outcome="success"))
    r.play(events)
    r.until(140)
    assert len(r.of("paid_but_pending", "open")) == 40
    [incident] = r.of("paid_but_pending_incident")
    assert incident.finding.state == "open" and incident.payment.channel == "alipay"
    assert incident.finding.fingerprint == "paid_but_pending_incident:alipay"
    first_due = 61  # order o0 charged at 1 s, grace 60 s; the 5th at 65 s
    assert secs(incident) - first_due <= 30
    r.until(400)
    assert [f.finding.state for f in r.of("paid_but_pending_incident")] == ["open", "resolved"]


def test_a_single_stuck_order_does_not_page():
    r = Run()
    r.play([pay(0, "payment_requested", "o1", "a1", outcome="success")])
    r.until(300)
    assert len(r.of("paid_but_pending", "open")) == 1
    assert r.of("paid_but_pending_incident") == []


def test_duplicate_burst_on_one_channel_pages_that_channel_once():
    r = Run()
    events = []
    for i in range(3):
        events.append(pay(10 + i, "payment_requested", f"o{i}", "a1", channel="wechat", outcome="success"))
        events.append(pay(10.5 + i, "payment_requested", f"o{i}", "a2", channel="wechat", outcome="success"))
    r.play(events)
    r.until(30)
    opened = r.of("duplicate_charge_incident", "open")
    # the overall scope leaves a burst concentrated on one channel to that channel: one jam, one page
    assert [f.finding.fingerprint for f in opened] == ["duplicate_charge_incident:wechat"]
    assert all(secs(f) - 11.5 <= 10 for f in opened)


# --- heartbeats ---------------------------------------------------------------------------


def test_silent_instance_is_missing_after_interval_times_grace_and_service_down_when_all_are():
    r = Run()
    events = [beat(t, "compensator", "c1") for t in range(0, 31, 5)]
    events += [beat(t, "compensator", "c2") for t in range(0, 61, 5)]
    r.play(events)
    r.until(45)
    [missing] = r.of("heartbeat_missing")
    assert missing.service.instance.id == "c1" and secs(missing) == 45  # 30 + 5 × 3
    assert r.of("service_down") == []
    r.until(80)
    [down] = r.of("service_down")
    assert down.finding.severity == "critical" and secs(down) == 75
    r.play([beat(82, "compensator", "c2")])
    assert [f.finding.state for f in r.of("service_down")] == ["open", "resolved"]


def test_stopping_beat_is_a_planned_stop():
    r = Run()
    r.play([beat(0, "detector", "d1"), beat(5, "detector", "d1", status="stopping")])
    r.until(600)
    assert r.findings == []


def test_flapping_instance_is_summarised_not_paged_each_time():
    r = Run()
    t = 0
    for _ in range(6):
        r.play([beat(t, "sdk", "s1"), beat(t + 5, "sdk", "s1")])
        t += 30  # 25 s silent > 15 s, then back
    r.until(t)
    assert len(r.of("service_flapping", "open")) == 1
    # paged only until the flapping was recognised
    assert len(r.of("heartbeat_missing", "open")) == 3
    assert len(r.of("heartbeat_missing", "resolved")) == 3


def test_required_service_never_seen_is_down():
    r = Run(DetectorSettings(required_services=["compensator"], startup_grace_s=30))
    r.play(
        [beat(0, "checkout", "c1", interval_s=10)]
        + [beat(t, "checkout", "c1", interval_s=10) for t in range(10, 50, 10)]
    )
    r.until(40)
    [down] = r.of("service_down")
    assert down.service.name == "compensator"


def test_late_old_heartbeat_does_not_move_the_clock_back():
    r = Run()
    r.play([beat(0, "x", "i1"), beat(10, "x", "i1")])
    r.feed(beat(1, "x", "i1"))
    r.until(24)
    assert r.of("heartbeat_missing") == []
    r.until(26)
    assert len(r.of("heartbeat_missing")) == 1


def test_settings_document_every_knob_and_reject_typos():
    for model in (DetectorSettings, ChannelSettings):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    with pytest.raises(ValueError):
        DetectorSettings(windw_s=1)
    merged = DetectorSettings(channels={"bank_b": {"query_after_s": 600}}).for_channel("bank_b")
    assert merged.query_after_s == 600 and merged.paid_grace_s == 60


def test_a_resolved_rollup_does_not_reopen_on_the_orders_it_already_counted():
    r = Run(DetectorSettings(incident_resolve_after=5))  # resolves before the 60 s span forgets the burst
    events = [pay(i / 10, "payment_requested", f"o{i}", "a", outcome="success") for i in range(20)]
    r.play(events)
    r.until(300)
    assert [f.finding.state for f in r.of("paid_but_pending_incident")] == ["open", "resolved"]


def test_window_edges_and_lateness():
    from paywatch.detectors.windows import WindowCounter

    w = WindowCounter(window_ms=2000, lateness_ms=2000)
    w.tallies(1999, "alipay", None)[0].attempts += 1  # last ms of window 0
    w.tallies(2000, "alipay", None)[0].attempts += 1  # first ms of window 1
    assert list(w.close_until(3999)) == []  # window 0 ends at 2000, judged at 4000
    [(index, window)] = list(w.close_until(4000))
    assert index == 0 and window["alipay"].attempts == 1
    w.tallies(1500, "alipay", None)[0].attempts += 1  # too late for window 0: counted in the oldest open one
    [(index, window)] = list(w.close_until(6000))
    assert index == 1 and window["alipay"].attempts == 2
    # a long silence closes at most one empty window per call instead of thousands
    closed = list(w.close_until(10_000_000))
    assert [i for i, _ in closed] == [2, 4998] and all(not win for _, win in closed)


def test_order_findings_name_the_merchant_for_slicing():
    run = Run()
    run.play(
        [
            pay(0, "order_created", "o-m", channel=None, merchant_id="m-42"),
            pay(1, "payment_requested", "o-m", "a1"),
            pay(2, "channel_callback", "o-m", "a1", outcome="success"),
            pay(3, "payment_requested", "o-m", "a2", channel="wechatpay"),
            pay(4, "channel_callback", "o-m", "a2", channel="wechatpay", outcome="success"),
        ]
    )
    run.until(120)
    [pending] = run.of("paid_but_pending", "open")
    [duplicate] = run.of("duplicate_charge", "open")
    assert pending.payment.merchant_id == duplicate.payment.merchant_id == "m-42"
