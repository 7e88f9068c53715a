"""Compensation core: schedule, budget and the compensator's decisions, with no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.compensation.budget import ChannelBudget, CircuitBreaker, TokenBucket
from paywatch.compensation.channels import QueryRequest, QueryResult
from paywatch.compensation.engine import Compensator
from paywatch.compensation.schedule import next_query, query_times
from paywatch.compensation.settings import BudgetSettings, ChannelQuerySettings, CompensationSettings, ScheduleSettings
from paywatch.contract import PAYMENT, Event, EventMeta, Payment, Service, ServiceInstance
from paywatch.finding import AttemptEvidence, Evidence, FindingPayment, make_finding

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def settings(**kw) -> CompensationSettings:
    channels = {
        "wechatpay": ChannelQuerySettings(adapter="wechatpay", base_url="https://api.mch.weixin.qq.com"),
        "alipay": ChannelQuerySettings(adapter="alipay", base_url="https://openapi.alipay.com"),
        "bank_b": ChannelQuerySettings(adapter="none"),
    }
    return CompensationSettings(channels=channels, **kw)


def finding(kind, order="o1", attempt="a1", channel="wechatpay", at=T0, state="open", attempts=(), sent_ms=None):
    figures = {"sent_at_ms": sent_ms} if sent_ms is not None else {}
    return make_finding(
        at=at,
        kind=kind,
        state=state,
        fingerprint=f"{kind}:{order}",
        severity="warning",
        summary="test",
        evidence=Evidence(
            figures=figures,
            attempts=[AttemptEvidence(attempt_id=a, channel=c, event_id=f"ev-{a}") for c, a in attempts],
        ),
        payment=FindingPayment(order_id=order, attempt_id=attempt, channel=channel),
    )


def event(action, order="o1", attempt=None, channel=None, outcome=None, at=T0):
    return Event(
        timestamp=at,
        event=EventMeta(id=f"{action}-{order}-{attempt}", dataset=PAYMENT, action=action, outcome=outcome),
        service=Service(name="order-service", instance=ServiceInstance(id="i1")),
        payment=Payment(order_id=order, attempt_id=attempt, channel=channel),
    )


def answer(req: QueryRequest, outcome="unknown", status=None, **kw) -> QueryResult:
    """A channel's answer; a success names the amount charged and refunded, as the adapters do."""
    if outcome == "success":
        kw = {"amount_minor": 8888, "refunded_minor": 0, "currency": "CNY", **kw}
    return QueryResult(req, outcome, channel_status=status, **kw)


# -- schedule -----------------------------------------------------------------------------------
def test_schedule_grows_with_bounded_deterministic_jitter():
    s = ScheduleSettings()
    times = query_times(s, T0, "a1")
    offsets = [(t - T0).total_seconds() for t in times]
    assert len(offsets) == len(s.offsets_s)
    previous = 0.0
    for got, base in zip(offsets, s.offsets_s, strict=True):
        assert base <= got <= base + s.jitter * (base - previous)
        previous = base
    assert times == query_times(s, T0, "a1")  # replays ask at the same times
    assert times != query_times(s, T0, "a2")  # but orders do not ask in lock-step
    assert next_query(s, T0, "a1", times[2]) == times[3]  # strictly after now
    assert next_query(s, T0, "a1", times[-1]) is None


def test_schedule_stops_at_the_horizon():
    s = ScheduleSettings(offsets_s=[60, 120, 600], horizon_s=300, jitter=0)
    assert [(t - T0).total_seconds() for t in query_times(s, T0, "x")] == [60, 120]


# -- budget -------------------------------------------------------------------------------------
def test_token_bucket_spaces_starts_by_the_rate():
    bucket = TokenBucket(rate=10, capacity=1)
    now, starts = 0.0, []
    while len(starts) < 25:
        wait = bucket.wait(now)
        if wait == 0:
            bucket.take(now)
            starts.append(now)
        else:
            now += wait
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(0.1)
    assert sum(1 for t in starts if t < 1.0) == 10


def test_circuit_opens_after_consecutive_failures_and_a_probe_closes_it():
    cb = CircuitBreaker(failures_to_open=3, open_s=10, max_open_s=40)
    assert cb.finished(0, ok=False) is None
    assert cb.finished(1, ok=True) is None  # a success resets the count
    cb.finished(2, ok=False), cb.finished(3, ok=False)
    assert cb.finished(4, ok=False) == "open"
    assert cb.wait(5) == pytest.approx(9)
    assert cb.wait(14) == 0 and cb.state == "half_open"
    cb.started()
    assert cb.wait(14) is None  # only one probe at a time
    assert cb.finished(15, ok=False) == "open"  # failed probe: wait doubles
    assert cb.wait(15) == pytest.approx(20)
    assert cb.wait(35) == 0
    cb.started()
    assert cb.finished(36, ok=True) == "closed"
    assert cb.wait(36) == 0


def test_budget_caps_concurrency_and_honours_retry_after():
    b = ChannelBudget(BudgetSettings(qps=1000, concurrency=2, headroom=0))
    b.start(0.0)
    b.start(0.001)
    assert b.wait(0.002) is None  # two in flight: wait for a release
    b.finish(0.003, api_failed=False, throttled=True, retry_after_s=2.0)
    assert b.wait(0.004) == pytest.approx(1.999)
    assert b.breaker.state == "closed"  # being asked to slow down is not a failing API
    b.finish(0.005, api_failed=False)
    assert b.wait(2.1) == 0


# -- compensator --------------------------------------------------------------------------------
def test_unknown_attempt_is_queried_now_then_on_schedule_until_the_channel_answers():
    comp = Compensator(settings())
    sent = T0 - timedelta(seconds=120)
    comp.on_finding(finding("unknown_attempt", at=T0, sent_ms=sent.timestamp() * 1000))
    (req,) = comp.due(T0)
    assert (req.channel, req.attempt_id, req.purposes, req.seq) == ("wechatpay", "a1", ("status",), 1)
    assert comp.due(T0) == []  # in flight: never asked twice at once
    fx = comp.on_result(answer(req, "unknown", "NOTPAY"), T0)
    (ev,) = fx.events
    assert ev.event.action == "channel_query_result" and ev.event.outcome == "unknown"
    assert ev.payment.status == "NOTPAY" and fx.actions[0]["event"]["action"] == "query"
    nxt = next_query(ScheduleSettings(), sent, "a1", T0)
    assert comp.due(nxt - timedelta(seconds=1)) == []
    (req2,) = comp.due(nxt)
    fx = comp.on_result(answer(req2, "success", "SUCCESS"), nxt)
    assert fx.events[0].event.outcome == "success" and fx.findings == []
    assert comp.tasks == {}
    assert not [a for a in fx.actions if a["action"]["type"] == "repair"]  # a repair needs a paid_but_pending claim


def test_not_found_inside_the_grace_is_unknown_and_after_it_failure():
    comp = Compensator(settings())
    comp.on_finding(finding("unknown_attempt", at=T0))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, "unknown", "ORDER_NOT_EXIST", not_found=True), T0)
    assert fx.events[0].event.outcome == "unknown" and comp.tasks
    later = T0 + timedelta(seconds=601)
    (req2,) = comp.due(later + timedelta(seconds=300))
    fx = comp.on_result(answer(req2, "unknown", "ORDER_NOT_EXIST", not_found=True), later)
    assert fx.events[0].event.outcome == "failure" and fx.events[0].payment.error_code == "not_found"
    assert comp.tasks == {}


def test_give_up_at_the_horizon_raises_a_finding_with_evidence_and_resolves_on_callback():
    s = settings(schedule=ScheduleSettings(offsets_s=[60, 120], horizon_s=200, jitter=0))
    comp = Compensator(s)
    comp.on_finding(finding("unknown_attempt"))
    now, raised = T0, []
    for _ in range(10):
        reqs = comp.due(now)
        for r in reqs:
            raised += comp.on_result(answer(r, "unknown", "USERPAYING"), now).findings
        now += timedelta(seconds=30)
    (gave_up,) = raised
    assert gave_up.finding.kind == "compensation_gave_up" and gave_up.finding.state == "open"
    assert gave_up.finding.evidence.figures["queries"] == 3
    assert gave_up.finding.evidence.figures["last_status"] == "USERPAYING"
    assert len(gave_up.finding.evidence.event_ids) == 4  # the finding + three query results
    assert comp.tasks == {}
    fx = comp.on_event(event("channel_callback", attempt="a1", channel="wechatpay", outcome="success"))
    assert [(f.finding.kind, f.finding.state) for f in fx.findings] == [("compensation_gave_up", "resolved")]


def test_query_api_errors_retry_after_the_longer_of_error_retry_and_retry_after():
    comp = Compensator(settings())
    comp.on_finding(finding("unknown_attempt"))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, api_failed=True, retry_after_s=90, http_status=503, error="HTTP 503"), T0)
    assert fx.events == []  # the channel said nothing about the payment
    assert fx.actions[0]["query"]["api_failed"] is True
    assert comp.due(T0 + timedelta(seconds=89)) == []
    assert comp.due(T0 + timedelta(seconds=100))


def test_paid_but_pending_is_repaired_only_after_the_channel_confirms():
    comp = Compensator(settings())
    comp.on_finding(finding("paid_but_pending", attempts=[("alipay", "a1")], channel="alipay"))
    (req,) = comp.due(T0)
    assert req.purposes == ("confirm_paid",)
    fx = comp.on_result(answer(req, "success", "TRADE_SUCCESS"), T0)
    (repair,) = [a for a in fx.actions if a["action"]["type"] == "repair"]
    assert repair["payment"] == {"order_id": "o1", "attempt_id": "a1", "channel": "alipay"}
    assert repair["action"]["from_status"] == "pending" and repair["action"]["to_status"] == "paid"
    assert repair["action"]["actor"] == "paywatch-compensator" and repair["action"]["dry_run"] is False
    assert fx.events[0].event.id in repair["action"]["evidence"]["event_ids"]


def test_no_repair_when_the_channel_denies_the_payment_or_the_order_got_paid_meanwhile():
    comp = Compensator(settings())
    comp.on_finding(finding("paid_but_pending", order="o1", attempts=[("alipay", "a1")], channel="alipay"))
    comp.on_finding(
        finding("paid_but_pending", order="o2", attempt="a2", channel="alipay", attempts=[("alipay", "a2")])
    )
    r1, r2 = sorted(comp.due(T0), key=lambda r: r.order_id)
    fx = comp.on_result(answer(r1, "failure", "TRADE_CLOSED"), T0)
    assert [a["action"]["type"] for a in fx.actions] == ["query", "repair_declined"]
    comp.on_event(event("order_paid", order="o2", attempt="a2"))
    fx = comp.on_result(answer(r2, "success", "TRADE_SUCCESS"), T0)
    assert [a["action"]["type"] for a in fx.actions] == ["query"]


def dup_finding():
    return finding("duplicate_charge", attempt="a2", channel="alipay", attempts=[("wechatpay", "a1"), ("alipay", "a2")])


def test_duplicate_is_reconfirmed_for_every_attempt_before_a_refund_candidate():
    comp = Compensator(settings())
    comp.on_finding(dup_finding())
    comp.on_event(event("order_paid", attempt="a2"))  # the order system kept the alipay charge
    reqs = {r.attempt_id: r for r in comp.due(T0)}
    assert set(reqs) == {"a1", "a2"}
    fx = comp.on_result(answer(reqs["a1"], "success", "SUCCESS"), T0)
    assert [a["action"]["type"] for a in fx.actions] == ["query"]  # not before every attempt is confirmed
    fx = comp.on_result(answer(reqs["a2"], "success", "TRADE_SUCCESS"), T0)
    (cand,) = [a for a in fx.actions if a["action"]["type"] == "refund_candidate"]
    assert cand["payment"]["attempt_id"] == "a1" and cand["action"]["evidence"]["keep"] == "a2"
    assert cand["action"]["evidence"]["channel_statuses"] == {"wechatpay/a1": "SUCCESS", "alipay/a2": "TRADE_SUCCESS"}
    assert not [a for a in fx.actions if a["action"]["type"] == "refund"]  # auto_refund is off
    assert comp.due(T0 + timedelta(days=2)) == []


def test_duplicate_not_confirmed_by_the_channel_is_not_a_refund_candidate():
    comp = Compensator(settings())
    comp.on_finding(dup_finding())
    reqs = {r.attempt_id: r for r in comp.due(T0)}
    comp.on_result(answer(reqs["a1"], "success", "SUCCESS"), T0)
    fx = comp.on_result(answer(reqs["a2"], "failure", "TRADE_CLOSED"), T0)
    assert [a["action"]["type"] for a in fx.actions] == ["query", "refund_declined"]


def test_auto_refund_waits_for_a_fresh_query_of_the_refunded_attempt():
    comp = Compensator(settings(auto_refund=True))
    comp.on_finding(dup_finding())
    reqs = {r.attempt_id: r for r in comp.due(T0)}
    comp.on_result(answer(reqs["a1"], "success", "SUCCESS"), T0)
    fx = comp.on_result(answer(reqs["a2"], "success", "TRADE_SUCCESS"), T0)
    types = [a["action"]["type"] for a in fx.actions]
    assert "refund_candidate" in types and "refund" not in types
    later = T0 + timedelta(seconds=5)
    (fresh,) = comp.due(later)
    assert fresh.purposes == ("pre_refund",) and fresh.attempt_id == "a2"  # keep a1, the first charge
    fx = comp.on_result(answer(fresh, "success", "TRADE_SUCCESS"), later)
    (refund,) = [a for a in fx.actions if a["action"]["type"] == "refund"]
    assert refund["action"]["to_status"] == "refund_requested"
    assert fx.events[0].event.id in refund["action"]["evidence"]["event_ids"]


def test_channel_without_query_api_is_reported_not_pretended():
    comp = Compensator(settings())
    fx = comp.on_finding(finding("unknown_attempt", channel="bank_b"))
    assert comp.due(T0 + timedelta(days=3)) == []
    (f,) = fx.findings
    assert f.finding.kind == "query_unavailable" and f.payment.channel == "bank_b"
    assert [a["action"]["type"] for a in fx.actions] == ["query_unavailable"]
    fx = comp.on_finding(finding("unknown_attempt", channel="unionpay", attempt="a9"))  # undeclared
    assert fx.findings[0].finding.kind == "query_unavailable"


def test_dry_run_marks_every_action():
    comp = Compensator(settings(dry_run=True))
    comp.on_finding(finding("paid_but_pending", attempts=[("alipay", "a1")], channel="alipay"))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, "success", "TRADE_SUCCESS"), T0)
    assert {a["action"]["dry_run"] for a in fx.actions} == {True}


def test_callback_cancels_a_pending_status_query():
    comp = Compensator(settings())
    comp.on_finding(finding("unknown_attempt"))
    comp.on_event(event("channel_callback", attempt="a1", channel="wechatpay", outcome="success"))
    assert comp.due(T0 + timedelta(days=1)) == []


def test_query_audit_masks_card_numbers_in_raw_answers():
    comp = Compensator(settings())
    comp.on_finding(finding("unknown_attempt"))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, "success", "SUCCESS", raw={"note": "card 4111 1111 1111 1111"}), T0)
    body = fx.actions[0]["query"]["response_body"]
    assert "4111 1111 1111 1111" not in body and "4111 11** **** 1111" in body


def test_give_up_raises_an_alert_through_the_shipped_rules():
    from paywatch.alerts.engine import AlertEngine
    from paywatch.alerts.rules import load_rules

    comp = Compensator(settings(schedule=ScheduleSettings(offsets_s=[60], horizon_s=60, jitter=0)))
    comp.on_finding(finding("paid_but_pending", attempts=[("alipay", "a1")], channel="alipay"))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, "unknown", "WAIT_BUYER_PAY"), T0 + timedelta(seconds=61))
    (gave_up,) = fx.findings
    assert gave_up.finding.severity == "critical"  # money at stake: a claimed charge nobody could confirm
    alerts = AlertEngine(load_rules())
    changes = alerts.on_finding(gave_up) + alerts.tick(T0 + timedelta(minutes=5))
    assert any(c.alert.name == "CompensationGaveUp" and c.page for c in changes)


def test_channel_settings_are_validated_and_overrides_apply():
    with pytest.raises(ValueError, match="base_url"):
        ChannelQuerySettings(adapter="stripe")
    with pytest.raises(ValueError, match="increasing"):
        ScheduleSettings(offsets_s=[300, 120])
    fast = BudgetSettings(qps=50)
    s = CompensationSettings(
        channels={"alipay": ChannelQuerySettings(adapter="alipay", base_url="https://a", budget=fast)}
    )
    assert s.budget_for("alipay").qps == 50 and s.budget_for("wechatpay").qps == BudgetSettings().qps
    assert s.queryable("alipay") and not s.queryable("wechatpay")


def test_resolving_one_unknown_attempt_keeps_querying_the_other_attempts_of_the_order():
    comp = Compensator(settings())
    comp.on_finding(finding("unknown_attempt", attempt="a1"))
    comp.on_finding(finding("unknown_attempt", attempt="a2"))
    comp.on_finding(finding("unknown_attempt", attempt="a1", state="resolved"))
    assert [r.attempt_id for r in comp.due(T0)] == ["a2"]


def test_a_refund_never_rests_on_a_query_sent_before_its_candidate_existed():
    """The race: an answer sent at t=2 s, the refund candidate created at t=3 s. The t=2 s answer
    may settle what it was asked for, never the refund; a fresh query, sent after, decides."""
    comp = Compensator(settings(auto_refund=True))
    dup = finding(
        "duplicate_charge", attempt="a1", channel="wechatpay", attempts=[("alipay", "a2"), ("wechatpay", "a1")]
    )
    comp.on_finding(dup)
    reqs = {r.attempt_id: r for r in comp.due(T0)}
    comp.on_result(answer(reqs["a1"], "success", "SUCCESS"), T0 + timedelta(seconds=1))
    comp.on_finding(finding("unknown_attempt", attempt="a1", at=T0 + timedelta(seconds=1)))
    (status_query,) = comp.due(T0 + timedelta(seconds=2))  # sent at t=2 s, before any candidate
    assert status_query.attempt_id == "a1" and status_query.purposes == ("status",)
    fx = comp.on_result(answer(reqs["a2"], "success", "TRADE_SUCCESS"), T0 + timedelta(seconds=3))
    (cand,) = [a for a in fx.actions if a["action"]["type"] == "refund_candidate"]
    assert cand["payment"]["attempt_id"] == "a1"  # keep a2, the first charge; refund a1
    fx = comp.on_result(answer(status_query, "success", "SUCCESS"), T0 + timedelta(seconds=4))
    assert not [a for a in fx.actions if a["action"]["type"] in ("refund", "refund_declined")]
    (fresh,) = comp.due(T0 + timedelta(seconds=4))
    assert fresh.attempt_id == "a1" and fresh.purposes == ("pre_refund",)
    fx = comp.on_result(answer(fresh, "success", "SUCCESS"), T0 + timedelta(seconds=5))
    (refund,) = [a for a in fx.actions if a["action"]["type"] == "refund"]
    assert refund["action"]["evidence"]["refund_minor"] == 8888
    assert fx.events[0].event.id in refund["action"]["evidence"]["event_ids"]


def test_untrusted_answers_and_refused_credentials_act_on_nothing():
    comp = Compensator(settings())
    comp.on_finding(finding("paid_but_pending", attempts=[("wechatpay", "a1")]))
    (req,) = comp.due(T0)
    fx = comp.on_result(answer(req, "unknown", "SUCCESS", untrusted="Wechatpay-Signature does not verify"), T0)
    assert [a["action"]["type"] for a in fx.actions] == ["query"] and fx.events == []
    assert [f.finding.kind for f in fx.findings] == ["untrusted_answer"]
    (req,) = comp.due(T0 + timedelta(days=1))
    fx = comp.on_result(answer(req, credentials="NO_AUTH"), T0 + timedelta(days=1))
    assert [f.finding.kind for f in fx.findings] == ["channel_credentials"] and fx.events == []
    assert "repair" not in [a["action"]["type"] for a in fx.actions]
