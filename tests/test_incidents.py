"""Incident rollups per channel, per merchant and overall: one jam is one page, in the scope that explains it."""

from __future__ import annotations

from test_detectors import Run, pay, secs

from paywatch.detectors.settings import DetectorSettings

CHANNELS = ["alipay", "wechatpay", "bank_a", "bank_b", "unionpay"]


def _stuck(t: float, order: str, channel: str, merchant: str) -> list:
    """A charge the business never records as paid: stuck `paid_grace_s` (60 s) later."""
    return [pay(t, "payment_requested", order, "a1", channel=channel, outcome="success", merchant_id=merchant)]


def _paid(t: float, order: str, channel: str, merchant: str) -> list:
    return [
        pay(t, "payment_requested", order, "a1", channel=channel, outcome="success", merchant_id=merchant),
        pay(t + 1, "order_paid", order, channel=None, merchant_id=merchant),
    ]


def _opened(r: Run, kind: str = "paid_but_pending_incident") -> list:
    return r.of(kind, "open")


def test_one_merchant_jammed_across_every_channel_pages_the_merchant_naming_its_channels():
    r = Run()
    events = []
    for i in range(30):  # 30 orders of m-7 over 15 min, round-robin over five channels
        events += _stuck(10 + i * 30, f"m7-{i}", CHANNELS[i % 5], "m-7")
    for i in range(300):  # everyone else is fine
        events += _paid(5 + i * 3, f"ok-{i}", CHANNELS[i % 5], f"m-{i % 40}")
    events.sort(key=lambda e: e.timestamp)
    r.play(events)
    r.until(1000)
    [incident] = _opened(r)
    assert incident.finding.fingerprint == "paid_but_pending_incident:merchant:m-7"
    assert incident.payment.merchant_id == "m-7" and incident.payment.channel is None
    # the first order passed its grace at 70 s; the sixth (the minimum) at 220 s
    assert secs(incident) - 70 <= 300
    for channel in CHANNELS:
        assert f"{channel} ×" in incident.finding.summary
    assert "for merchant m-7" in incident.finding.summary
    assert incident.finding.evidence.figures["orders"] == 6


def test_a_merchant_jam_on_one_channel_is_left_to_the_channel_which_names_the_merchant():
    r = Run()
    events = []
    for i in range(12):
        events += _stuck(10 + i * 2, f"m7-{i}", "alipay", "m-7")
    r.play(events)
    r.until(200)
    [incident] = _opened(r)
    assert incident.finding.fingerprint == "paid_but_pending_incident:alipay"
    assert "merchants m-7 ×" in incident.finding.summary


def test_stuck_orders_spread_over_channels_and_merchants_page_overall():
    """The platform's own order service jams: every merchant, every channel, no narrower scope explains it."""
    r = Run()
    events = []
    for i in range(20):
        events += _stuck(10 + i * 10, f"o-{i}", CHANNELS[i % 5], f"m-{i}")
    r.play(events)
    r.until(400)
    [incident] = _opened(r)
    assert incident.finding.fingerprint == "paid_but_pending_incident:all"
    assert incident.payment is None
    assert "across all channels" in incident.finding.summary and "merchants m-" in incident.finding.summary


def test_duplicates_spread_over_channels_page_overall():
    r = Run()
    events = []
    for i in range(4):
        channel = CHANNELS[i]
        events.append(pay(10 + i, "payment_requested", f"o{i}", "a1", channel=channel, outcome="success"))
        events.append(pay(10.5 + i, "payment_requested", f"o{i}", "a2", channel=channel, outcome="success"))
    r.play(events)
    r.until(30)
    [incident] = _opened(r, "duplicate_charge_incident")
    assert incident.finding.fingerprint == "duplicate_charge_incident:all"
    assert "channels alipay ×1, bank_a ×1" in incident.finding.summary


def test_a_merchant_with_a_steady_trickle_does_not_page_and_idle_merchants_are_forgotten():
    settings = DetectorSettings()
    r = Run(settings)
    events = []
    for i in range(40):  # one stuck order every 75 s: 4 in any 5-min span, below the minimum of 6
        events += _stuck(10 + i * 75, f"t-{i}", CHANNELS[i % 5], "m-slow")
    r.play(events)
    r.until(3100)
    assert _opened(r) == []
    r.until(3100 + 3600)
    assert not any(key.startswith("merchant:") for _, key in r.engine.judge.incidents.rollups)
