"""The pure alerting core: findings in, alert changes out, no I/O and no wall clock."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alerts_support import rules
from alerts_support import stuck as stuck_at

from paywatch.alerts.engine import AlertEngine, Links
from paywatch.alerts.kibana import evidence_query
from paywatch.alerts.rules import Rules, RulesError, load_rules
from paywatch.alerts.watchdog import StallMonitor, watchdog_change
from paywatch.finding import FindingPayment, FindingService, make_finding
from paywatch.kibana import discover_url

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stuck(order: str, seconds: float = 0, state: str = "open", channel: str = "alipay"):
    return stuck_at(order, at(seconds), state, channel)


def health(level: str, seconds: float, channel: str = "bank_b", state: str = "open", summary: str = ""):
    return make_finding(
        at=at(seconds),
        kind="channel_health",
        state=state,
        fingerprint=f"channel_health|{channel}",
        severity="critical",
        summary=summary or f"{channel} failure rate high",
        level=level,
        payment=FindingPayment(channel=channel),
    )


@pytest.fixture
def engine():
    return AlertEngine(rules(), resend_interval=timedelta(seconds=60))


def test_a_single_stuck_order_is_recorded_not_paged(engine):
    changes = engine.on_finding(stuck("o1"))
    assert [(c.reason, c.page, c.alert.status) for c in changes] == [("opened", False, "pending")]
    resolved = engine.on_finding(stuck("o1", 30, "resolved"))
    assert [(c.reason, c.page, c.alert.status) for c in resolved] == [("resolved", False, "resolved")]
    assert engine.active() == []


def test_stuck_orders_of_one_channel_roll_up_into_one_page(engine):
    changes = [c for i in range(5) for c in engine.on_finding(stuck(f"o{i}", i))]
    paged = [c for c in changes if c.page]
    assert len(paged) == 1  # the third order crosses page_at=3; the fourth and fifth add no page
    assert paged[0].reason == "fired" and paged[0].at == at(2)
    alert = paged[0].alert
    assert alert.labels == {"alertname": "PaidButPending", "severity": "critical", "channel": "alipay"}
    assert alert.annotations["summary"] == "3 orders paid at alipay but still pending in the business"
    assert len({c.alert.fingerprint for c in changes}) == 1
    [active] = engine.active()
    assert active.order_ids == ("o0", "o1", "o2", "o3", "o4")


def test_other_channels_are_other_alerts(engine):
    for i in range(3):
        engine.on_finding(stuck(f"a{i}", i, channel="alipay"))
    changes = engine.on_finding(stuck("w0", 5, channel="wechat"))
    assert changes[0].alert.labels["channel"] == "wechat" and not changes[0].page
    assert len(engine.active()) == 2


def test_a_repeated_finding_is_deduplicated(engine):
    for i in range(3):
        engine.on_finding(stuck(f"o{i}", i))
    assert engine.on_finding(stuck("o1", 10)) == []
    assert len(engine.active()) == 1


def test_firing_alert_is_resent_on_schedule_and_not_before(engine):
    for i in range(3):
        engine.on_finding(stuck(f"o{i}", i))  # fires at t=2
    assert engine.tick(at(61)) == []
    [resent] = engine.tick(at(62))
    assert (resent.reason, resent.page, resent.alert.status) == ("resent", True, "firing")
    assert engine.tick(at(100)) == []
    assert len(engine.tick(at(122))) == 1


def test_pending_alerts_are_never_resent(engine):
    engine.on_finding(stuck("o1"))
    assert engine.tick(at(3600)) == []


def test_resolves_only_when_the_last_order_resolves_and_keeps_its_evidence(engine):
    for i in range(3):
        engine.on_finding(stuck(f"o{i}", i))
    assert engine.on_finding(stuck("o0", 50, "resolved")) == []  # still 2 stuck: no flapping
    assert engine.on_finding(stuck("o1", 51, "resolved")) == []
    [resolved] = engine.on_finding(stuck("o2", 52, "resolved"))
    assert (resolved.reason, resolved.page, resolved.alert.status) == ("resolved", True, "resolved")
    assert resolved.alert.ends_at == at(52) and resolved.alert.starts_at == at(0)
    assert "o2" in resolved.alert.annotations["description"]
    assert engine.tick(at(1000)) == []


def test_incident_finding_and_its_orders_are_one_alert(engine):
    incident = make_finding(
        at=at(0),
        kind="paid_but_pending_incident",
        state="open",
        fingerprint="pbp_incident|alipay",
        severity="critical",
        summary="12 orders paid but pending in 60s",
        payment=FindingPayment(channel="alipay"),
    )
    [fired] = engine.on_finding(incident)
    assert fired.page and fired.reason == "opened"
    assert engine.on_finding(stuck("o1", 1)) == []
    assert len(engine.active()) == 1


def test_channel_health_moves_between_alerts_by_level(engine):
    [degraded] = engine.on_finding(health("degraded", 0))
    assert degraded.alert.name == "ChannelDegraded" and degraded.alert.labels["severity"] == "warning"
    old_resolved, down = engine.on_finding(health("down", 10))
    assert (old_resolved.alert.name, old_resolved.alert.status, old_resolved.page) == (
        "ChannelDegraded",
        "resolved",
        True,
    )
    assert (down.alert.name, down.alert.status, down.page) == ("ChannelDown", "firing", True)
    [recovered] = engine.on_finding(health("healthy", 20))
    assert (recovered.alert.name, recovered.alert.status) == ("ChannelDown", "resolved")


def test_per_channel_override_and_record_only_kinds():
    rules = Rules.model_validate(
        {
            "rules": [
                {
                    "kind": "paid_but_pending",
                    "alertname": "PaidButPending",
                    "severity": "critical",
                    "group_by": ["channel"],
                    "page_at": 3,
                    "channels": {"bank_b": {"page_at": 1, "severity": "warning"}, "tiny": {"page": False}},
                },
                {"kind": "service_flapping", "alertname": "Flapping", "severity": "warning", "page": False},
            ]
        }
    )
    engine = AlertEngine(rules)
    [bank_b] = engine.on_finding(stuck("b1", channel="bank_b"))
    assert bank_b.page and bank_b.alert.labels["severity"] == "warning"
    tiny = [c for i in range(10) for c in engine.on_finding(stuck(f"t{i}", i, channel="tiny"))]
    assert not any(c.page for c in tiny)
    flapping = make_finding(
        at=at(0),
        kind="service_flapping",
        state="open",
        fingerprint="flap|svc",
        severity="warning",
        summary="svc restarts",
        service=FindingService(name="svc"),
    )
    [recorded] = engine.on_finding(flapping)
    assert (recorded.page, recorded.alert.status) == (False, "pending")
    assert engine.on_finding(stuck("x", channel="unruled")) != []  # alipay-like rule applies to any channel
    assert engine.on_finding(health("down", 0)) == []  # kinds without a rule are ignored


def test_annotations_link_to_runbook_and_kibana_evidence():
    links = Links(runbook_base_url="https://docs.example/alerts.md", kibana_url="http://kibana:5601/")
    engine = AlertEngine(rules(), links=links)
    for i in range(3):
        engine.on_finding(stuck(f"o'{i}", i))
    [alert] = engine.active()
    assert alert.annotations["runbook_url"] == "https://docs.example/alerts.md#paid-but-pending"
    url = alert.annotations["kibana_url"]
    assert url.startswith("http://kibana:5601/app/discover#/?_g=(time:(from:'2026-03-01T11:00:00")
    assert "to:now" in url and "dataViewId:'logs-paywatch'" in url
    assert "o!'0" in url  # rison escapes the quote inside the order id


def test_evidence_query_prefers_orders_and_events_then_scope():
    assert evidence_query(["a", 'b"c'], [], {}) == 'payment.order_id:("a" or "b\\"c")'
    assert evidence_query([], ["e2", "e1", "e1"], {}) == 'event.id:("e1" or "e2")'
    assert evidence_query([], [], {"payment.channel": "alipay"}) == 'payment.channel:"alipay"'
    url = discover_url("http://k", "dv", "x:1", T0.isoformat(), (T0 + timedelta(hours=1)).isoformat())
    assert "to:'2026-03-01T13:00:00%2B00:00'" in url


def test_rules_file_errors_are_clear(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - kind: paid_but_pendin\n    alertname: X\n    severity: critical\n")
    with pytest.raises(RulesError, match="unknown finding kind 'paid_but_pendin'"):
        load_rules(bad)
    bad.write_text("rules:\n  - kind: service_down\n    alertname: X\n    severity: critical\n    summary: '{oops}'\n")
    with pytest.raises(RulesError, match="bad summary template"):
        load_rules(bad)
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    rule = "  - kind: service_down\n    alertname: X\n    severity: critical\n"
    bad.write_text("rules:\n" + rule + rule)
    with pytest.raises(RulesError, match="two rules match kind=service_down"):
        load_rules(bad)


def test_stall_monitor_fires_and_resolves_through_the_engine(engine):
    monitor = StallMonitor(max_consumer_lag=100, max_tick_age=timedelta(seconds=60))
    monitor.observe_lag("paywatch-alert", 5)
    monitor.observe_tick("paywatch-detect", at(0))
    assert monitor.check(at(30)) == []
    [late] = monitor.check(at(61))
    assert late.open and late.service == "paywatch-detect" and "61s ago" in late.summary
    assert monitor.check(at(70)) == []  # no news while still stalled
    [fired] = engine.on_signal(late)
    assert (fired.alert.name, fired.alert.labels["service"], fired.page) == ("PaywatchStalled", "paywatch-detect", True)
    monitor.observe_lag("paywatch-alert", 500)
    monitor.observe_tick("paywatch-detect", at(75))
    lagging, caught_up = sorted(monitor.check(at(80)), key=lambda s: s.open, reverse=True)
    assert lagging.open and "500 messages behind" in lagging.summary
    assert not caught_up.open and caught_up.service == "paywatch-detect"
    [resolved] = engine.on_signal(caught_up)
    assert resolved.alert.status == "resolved" and resolved.page
    monitor.observe_tick("paywatch-detect", at(81), "degraded")
    [failing] = monitor.check(at(82))
    assert failing.open and "failing check" in failing.summary
    monitor.observe_tick("paywatch-detect", at(83), "stopping")  # a planned stop is not a stall
    [stopped] = monitor.check(at(500))
    assert not stopped.open and not monitor.is_stalled("paywatch-detect")
    assert monitor.check(at(1000)) == []


def test_watchdog_is_always_firing():
    change = watchdog_change(T0, at(300))
    assert change.page and change.alert.status == "firing"
    assert change.alert.labels == {"alertname": "PaywatchWatchdog", "severity": "none"}
    assert change.alert.fingerprint == watchdog_change(T0, at(900)).alert.fingerprint


def test_every_shipped_rule_has_a_runbook_section():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerts.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", doc, re.M)}
    missing = {rule.runbook for rule in load_rules().rules} - anchors
    assert missing == set()


def test_card_numbers_never_reach_annotations(engine):
    finding = make_finding(
        at=at(0),
        kind="service_down",
        state="open",
        fingerprint="down|checkout",
        severity="critical",
        summary="checkout crashed on card 4111111111111111",
        service=FindingService(name="checkout"),
    )
    [change] = engine.on_finding(finding)
    assert "4111111111111111" not in str(change.alert.annotations)
    assert "411111******1111" in change.alert.annotations["summary"]


def duplicate(order: str, seconds: float, channel: str, state: str = "open"):
    return make_finding(
        at=at(seconds),
        kind="duplicate_charge",
        state=state,
        fingerprint=f"duplicate_charge|{order}",
        severity="critical",
        summary=f"order {order} charged twice",
        payment=FindingPayment(order_id=order, channel=channel),
    )


def duplicate_burst(seconds: float, state: str = "open"):
    return make_finding(
        at=at(seconds),
        kind="duplicate_charge_incident",
        state=state,
        fingerprint="duplicate_charge_incident",
        severity="critical",
        summary="3 orders charged more than once in 20 s",
    )


def test_duplicates_are_one_cross_channel_alert_paged_by_the_burst_not_by_single_orders():
    engine = AlertEngine(load_rules())  # the shipped rules: single duplicates never page
    changes = [
        c
        for i, ch in enumerate(["alipay", "wechatpay", "bank_b", "alipay"])
        for c in engine.on_finding(duplicate(f"d{i}", i, ch))
    ]
    assert [(c.reason, c.page) for c in changes] == [("opened", False)]
    assert changes[0].alert.labels == {"alertname": "DuplicateCharge", "severity": "critical"}
    [fired] = engine.on_finding(duplicate_burst(10))
    assert (fired.reason, fired.page, fired.alert.fingerprint) == ("fired", True, changes[0].alert.fingerprint)
    assert fired.alert.annotations["summary"].endswith("(4 orders)")
    # The burst is over; the duplicates still await their refunds: over for on-call, still on record.
    [over] = engine.on_finding(duplicate_burst(300, "resolved"))
    assert (over.reason, over.page, over.alert.status, over.alert.ends_at) == ("resolved", True, "resolved", at(300))
    [active] = engine.active()
    assert active.status == "pending" and engine.tick(at(1000)) == []
    [again] = engine.on_finding(duplicate_burst(2000))
    assert (again.reason, again.page, again.alert.starts_at) == ("fired", True, at(300))
    for i in range(4):
        engine.on_finding(duplicate(f"d{i}", 2100, "x", "resolved"))
    [last] = engine.on_finding(duplicate_burst(2200, "resolved"))
    assert (last.reason, last.page) == ("resolved", True) and engine.active() == []


def _merchant_incident(merchant: str, seconds: float, state: str = "open"):
    return make_finding(
        at=at(seconds),
        kind="paid_but_pending_incident",
        state=state,
        fingerprint=f"paid_but_pending_incident:merchant:{merchant}",
        severity="critical",
        summary=f"12 orders paid but still pending for merchant {merchant} in 300 s (channels alipay ×6, bank_a ×6)",
        payment=FindingPayment(merchant_id=merchant),
    )


def _stuck_of(order: str, seconds: float, channel: str, merchant: str, state: str = "open"):
    finding = stuck(order, seconds, state, channel)
    finding.payment.merchant_id = merchant
    return finding


def test_a_merchant_jam_pages_once_and_its_stuck_orders_join_that_page_on_every_channel(engine):
    [fired] = engine.on_finding(_merchant_incident("m-7", 0))
    assert fired.page and fired.alert.labels == {
        "alertname": "PaidButPending",
        "severity": "critical",
        "merchant": "m-7",
    }  # no channel="unknown": the label the finding does not carry is left out
    joined = [
        c for i in range(12) for c in engine.on_finding(_stuck_of(f"o{i}", 1 + i, ["alipay", "bank_a"][i % 2], "m-7"))
    ]
    assert [c for c in joined if c.page] == []  # the per-channel safety net (page_at 3) stays quiet
    # another merchant's stuck orders on alipay are another story: their own channel alert pages
    other = [c for i in range(3) for c in engine.on_finding(_stuck_of(f"x{i}", 20 + i, "alipay", "m-2"))]
    assert [(c.reason, c.alert.labels.get("channel")) for c in other if c.page] == [("fired", "alipay")]
    # the merchant's page stays firing while its orders are stuck, and resolves once with the last one
    assert [c for c in engine.on_finding(_merchant_incident("m-7", 100, "resolved")) if c.page] == []
    resolved = [c for i in range(12) for c in engine.on_finding(_stuck_of(f"o{i}", 200 + i, "x", "m-7", "resolved"))]
    assert [(c.reason, c.alert.labels.get("merchant")) for c in resolved if c.page] == [("resolved", "m-7")]


def test_paged_order_ids_stay_whole_in_text_and_links_and_card_numbers_do_not():
    """Luhn-valid numeric order ids are ids: the page and its Kibana link must name them as
    stored. An 'order id' that is a card number (from a producer that bypassed ingest) and a
    card number in a channel name are masked: a page cannot refuse them."""
    from urllib.parse import unquote

    links = Links(runbook_base_url="", kibana_url="http://kibana:5601/")
    engine = AlertEngine(rules(), links=links)
    orders = ["4111111111111111", "2026112600000003", "2026112600000011"]
    for i, order in enumerate(orders):
        engine.on_finding(stuck(order, i, channel="bank 5555 5555 5555 4444"))
    [alert] = engine.active()
    assert alert.labels["channel"] == "bank 5555 55** **** 4444"
    assert alert.order_ids == ("2026112600000003", "2026112600000011", "411111******1111")
    assert alert.annotations["description"] == (
        "order 2026112600000011 paid at bank 5555 55** **** 4444 but pending\n"  # the latest order's summary
        "Orders: 2026112600000003, 2026112600000011, 411111******1111"
    )
    link = unquote(alert.annotations["kibana_url"])
    assert '"2026112600000003" or "2026112600000011" or "411111******1111"' in link
    assert "4111111111111111" not in str(alert) and "5555 5555" not in str(alert)


def test_shipped_rules_summaries_read_as_sentences():
    """The shipped rules, not a test rule set: "1 order", a channel named once, ids untouched."""
    engine = AlertEngine(load_rules(None), resend_interval=timedelta(seconds=60))
    (opened,) = engine.on_finding(stuck("o1"))
    assert opened.alert.annotations["summary"] == "1 order paid at alipay but still pending in the business"
    degraded = health("degraded", 0, summary="channel bank_b is degraded: 5 of 6 attempts failed")
    (fired,) = [c for c in engine.on_finding(degraded) if c.page]
    assert fired.alert.annotations["summary"] == "Channel bank_b is degraded: 5 of 6 attempts failed"
    (fired,) = [c for c in engine.on_finding(health("down", 1, "alipay", summary="alipay answers nothing")) if c.page]
    assert fired.alert.annotations["summary"] == "alipay answers nothing"  # an id is never capitalised
