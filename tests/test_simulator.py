"""The traffic simulator: deterministic, contract-valid, realistically mixed, and every
scenario's ground truth recomputed independently from the events it produced."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from paywatch.app.simulate import simulate as simulate_command
from paywatch.contract import decode, encode
from paywatch.simulator import simulate
from paywatch.simulator.scenarios import DEFAULT_START, ScenarioError, parse_duration, parse_scenario
from paywatch.truth import encode_incident

SUCCESS_ACTIONS = {"payment_requested", "channel_callback", "channel_query_result"}


def run(scenarios, *, seed=5, duration="20m", telemetry="direct", **kw):
    r = simulate(scenarios, seed=seed, duration=duration, telemetry=telemetry, **kw)
    return r, list(r)


def at(minutes: float) -> datetime:
    return DEFAULT_START + timedelta(minutes=minutes)


def successes(events):
    """(time, order_id, attempt_id, channel) of every success the platform saw."""
    return [
        (e.timestamp, e.payment.order_id, e.payment.attempt_id, e.payment.channel)
        for e in events
        if e.payment is not None and e.event.action in SUCCESS_ACTIONS and e.event.outcome == "success"
    ]


def duplicate_times(events, since=None, channel=None):
    """When each order got its second distinct successful attempt, in time order; with `channel`,
    only orders charged on that channel since `since`."""
    seen: dict[str, set[str]] = defaultdict(set)
    on_channel: set[str] = set()
    out = []
    for t, order, attempt, ch in successes(events):
        if ch == channel and (since is None or t >= since):
            on_channel.add(order)
        if since is not None and t < since:
            seen[order].add(attempt)
            continue
        before = len(seen[order])
        seen[order].add(attempt)
        if before == 1 and len(seen[order]) == 2 and (channel is None or order in on_channel):
            out.append(t)
    return out


@pytest.fixture(scope="module")
def normal():
    return run(["normal"], seed=11, duration="30m")


# ---------------------------------------------------------------- determinism and contract


def test_same_seed_gives_identical_bytes_and_another_seed_does_not():
    def raw(seed):
        _, events = run(["callback_outage:start=2m,duration=3m"], seed=seed, duration="6m")
        return b"".join(encode(e) + b"\n" for e in events)

    assert raw(3) == raw(3)
    assert raw(3) != raw(4)


def test_sdk_and_direct_telemetry_emit_identical_bytes():
    """The SDK path is the real one; the direct path must not drift from it."""
    _, via_sdk = run(["duplicate_burst:start=1m,duration=1m"], seed=9, duration="3m", telemetry="sdk")
    _, direct = run(["duplicate_burst:start=1m,duration=1m"], seed=9, duration="3m", telemetry="direct")
    assert len(via_sdk) > 1000
    assert [encode(e) for e in via_sdk] == [encode(e) for e in direct]


def test_every_event_is_valid_sorted_and_unique(normal):
    _, events = normal
    ids = set()
    last = None
    for e in events:
        assert decode(encode(e)) == e  # passes the contract's own validation
        assert last is None or e.timestamp >= last
        last = e.timestamp
        ids.add(e.event.id)
    assert len(ids) == len(events)
    assert events[-1].timestamp < at(30)


def test_ids_money_and_time_follow_the_team_rules(normal):
    _, events = normal
    for e in events[:5000]:
        assert e.timestamp.utcoffset() == timedelta(0)
        if e.payment is not None:
            assert isinstance(e.payment.order_id, str)
            assert isinstance(e.payment.amount_minor, int) and e.payment.amount_minor > 0
            assert e.payment.currency == "CNY"


# ---------------------------------------------------------------- realism of normal traffic


def test_normal_mix_is_realistic(normal):
    _, events = normal
    pay = [e for e in events if e.payment is not None]
    actions = Counter(e.event.action for e in pay)
    orders = actions["order_created"]
    assert 15_000 < orders < 40_000  # ~14 orders/s at 10:00 local, peak 25/s
    assert set(actions) >= {"order_created", "payment_requested", "channel_callback", "channel_query_result",
                            "order_paid", "order_closed", "refund_requested", "refund_succeeded"}  # fmt: skip
    assert 0.85 < actions["order_paid"] / orders < 0.97
    requests = [e for e in pay if e.event.action == "payment_requested"]
    share = Counter(e.payment.channel for e in requests)
    assert share.most_common(1)[0][0] == "wechatpay"
    assert 0.35 < share["wechatpay"] / len(requests) < 0.48
    assert 0.30 < share["alipay"] / len(requests) < 0.42
    assert 0.02 < share["bank_b"] / len(requests) < 0.07
    # Customer failures dominate channel failures on card/bank channels, and both exist.
    cats = Counter((e.payment.channel, e.payment.error_category) for e in requests if e.event.outcome == "failure")
    for ch in ("unionpay", "bank_a", "bank_b"):
        assert cats[(ch, "user")] > 3 * cats[(ch, "channel")] > 0
        assert cats[(ch, "limit")] > 0
    # Channel failures are rare in normal traffic: a detector paging on them is wrong.
    for ch in share:
        assert cats[(ch, "channel")] / share[ch] < 0.02
    # Long-tailed latencies: p99 several times the median.
    for ch in share:
        lat = sorted(e.payment.latency_ms for e in requests if e.payment.channel == ch)
        assert lat[int(len(lat) * 0.99)] > 2.5 * lat[len(lat) // 2]
    # Customers switch channel within one order, and prices change between attempts.
    by_order = defaultdict(list)
    for e in requests:
        by_order[e.payment.order_id].append(e)
    assert sum(1 for rs in by_order.values() if len({r.payment.channel for r in rs}) > 1) > 50
    assert sum(1 for rs in by_order.values() if len({r.payment.amount_minor for r in rs}) > 1) > 3
    # Duplicate charges exist but at a near-zero baseline.
    dups = len(duplicate_times(events))
    assert dups / orders < 5e-4


def test_normal_callbacks_are_duplicated_sometimes_and_wallet_results_come_only_by_callback(normal):
    _, events = normal
    callbacks = Counter(e.payment.attempt_id for e in events if e.event.action == "channel_callback")
    assert any(n > 1 for n in callbacks.values())  # channels re-notify
    wallet_sync = [
        e for e in events
        if e.event.action == "payment_requested" and e.payment.channel in ("wechatpay", "alipay")
        and e.event.outcome == "success"
    ]  # fmt: skip
    assert wallet_sync == []


def test_every_service_instance_beats_at_its_interval(normal):
    r, events = normal
    beats = defaultdict(list)
    for e in events:
        if e.heartbeat is not None:
            beats[(e.service.name, e.service.instance.id)].append(e)
    assert {name for name, _ in beats} == set(r.sim.settings.instances)
    for (_, _), bs in beats.items():
        seqs = [b.heartbeat.seq for b in bs]
        assert seqs == sorted(seqs)
        if bs[-1].heartbeat.status == "stopping":  # a planned stop (rolling deploy) ends the instance
            bs = bs[:-1]
        assert all(b.heartbeat.status == "up" for b in bs)
        gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in itertools.pairwise(bs)]
        assert all(9.5 < g < 10.5 for g in gaps)


def test_diurnal_volume_is_low_at_night_and_high_at_lunch():
    night, _ = run(["normal"], start=datetime.fromisoformat("2026-01-15T19:00:00+00:00"), duration="1m")
    lunch, _ = run(["normal"], start=datetime.fromisoformat("2026-01-15T04:00:00+00:00"), duration="1m")
    assert lunch.sim._n_orders > 5 * night.sim._n_orders


# ---------------------------------------------------------------- scenarios and their truth


def stuck_from(events, channel, start, end, grace_s=60):
    """Independently: the first order whose success on `channel` inside the window is still
    not paid `grace_s` later, plus the grace."""
    paid_at: dict[str, datetime] = {}
    for e in events:
        if e.event.action == "order_paid":
            paid_at.setdefault(e.payment.order_id, e.timestamp)
    best = None
    for t, order, _, ch in successes(events):
        if ch != channel or not start <= t < end:
            continue
        paid = paid_at.get(order)
        if paid is not None and paid <= t:
            continue
        if paid is None or (paid - t).total_seconds() > grace_s:
            due = t + timedelta(seconds=grace_s)
            best = due if best is None or due < best else best
    return best


def test_callback_outage_unprocessed_jams_payment_results_and_customers_pay_again():
    r, events = run(["callback_outage:channel=alipay,start=5m,duration=8m"], duration="25m")
    (inc,) = r.incidents
    assert inc.scenario == "callback_outage" and inc.id == "inc-1"
    assert (inc.start, inc.end) == (at(5), at(13))
    assert inc.detect_from == stuck_from(events, "alipay", at(5), at(13))
    assert at(5) + timedelta(seconds=60) <= inc.detect_from < at(7)
    assert [i.to_dict() for i in inc.expect] == [
        {"kind": "paid_but_pending_incident", "channel": "alipay", "within_s": 30.0}
    ]
    # No alipay success seen inside the window is applied before the window ends.
    in_window = {o for t, o, _, ch in successes(events) if ch == "alipay" and at(5) <= t < at(13)}
    paid_early = [
        e for e in events
        if e.event.action == "order_paid" and e.payment.channel == "alipay" and at(5) <= e.timestamp < at(13)
        and e.payment.order_id in in_window
    ]  # fmt: skip
    assert len(in_window) > 500 and paid_early == []
    # Customers who saw "unpaid" paid again: duplicates far above the baseline, some triple.
    dups = duplicate_times(events)
    assert len([t for t in dups if at(5) <= t < at(15)]) > 30
    charged = defaultdict(set)
    for _, o, a, _ in successes(events):
        charged[o].add(a)
    assert max(len(a) for a in charged.values()) >= 3


def test_callback_outage_lost_means_no_callbacks_on_the_channel_inside_the_window():
    r, events = run(["callback_outage:channel=wechatpay,start=4m,duration=5m,mode=lost"], duration="20m")
    callbacks = [e for e in events if e.event.action == "channel_callback" and e.payment.channel == "wechatpay"]
    assert [e for e in callbacks if at(4) <= e.timestamp < at(9)] == []
    assert any(e.timestamp >= at(9) for e in callbacks)  # the channel's retries arrive afterwards
    # The compensation job's queries reveal the payments and the business applies them at once,
    # so nothing is visibly paid-but-pending; the customers' second payments are what shows.
    assert stuck_from(events, "wechatpay", at(4), at(9)) is None
    (inc,) = r.incidents
    assert inc.detect_from == duplicate_times(events, since=at(4), channel="wechatpay")[1]
    assert [i.to_dict() for i in inc.expect] == [{"kind": "duplicate_charge_incident", "within_s": 30.0}]


def test_duplicate_burst_truth_is_the_second_duplicate():
    r, events = run(["duplicate_burst:channel=wechatpay,start=3m,duration=2m,rate=0.3"], duration="10m")
    (inc,) = r.incidents
    burst = duplicate_times(events, since=at(3), channel="wechatpay")
    assert len([t for t in burst if t < at(5)]) > 50
    assert inc.detect_from == burst[1]
    assert [i.to_dict() for i in inc.expect] == [
        {"kind": "duplicate_charge_incident", "channel": "wechatpay", "within_s": 10.0}
    ]
    refunds = [e for e in events if e.event.action == "refund_succeeded"]
    assert len(refunds) > 20  # the business refunds the duplicates it applied


def test_channel_down_fails_most_attempts_at_50_per_second_then_recovers():
    r, events = run(["channel_down:channel=bank_b,start=4m,duration=3m,rate=50"], duration="12m")
    (inc,) = r.incidents
    reqs = [e for e in events if e.event.action == "payment_requested" and e.payment.channel == "bank_b"]

    def channel_failure_share(lo, hi):
        window = [e for e in reqs if lo <= e.timestamp < hi]
        bad = [e for e in window if e.payment.error_category == "channel"]
        return len(window) / (hi - lo).total_seconds(), len(bad) / len(window)

    rate_in, share_in = channel_failure_share(at(4) + timedelta(seconds=10), at(7))
    rate_before, share_before = channel_failure_share(at(1), at(4))
    _, share_after = channel_failure_share(at(8), at(12))
    assert rate_before > 45 and rate_in > 45
    assert share_in > 0.8 and share_before < 0.03 and share_after < 0.03
    first_outage = min(
        e.timestamp for e in reqs
        if e.timestamp >= at(4) and e.payment.error_code in ("SYSTEM_ERROR", "CHANNEL_UNAVAILABLE", "GATEWAY_TIMEOUT")
    )  # fmt: skip
    assert at(4) <= inc.detect_from <= first_outage
    assert inc.to_dict()["recover"] == [
        {"kind": "channel_health", "channel": "bank_b", "level": "healthy", "within_s": 120.0}
    ]
    assert [i.to_dict() for i in inc.expect] == [
        {"kind": "channel_health", "channel": "bank_b", "level": "degraded", "within_s": 30.0}
    ]


def test_compensation_job_dies_silently_and_its_queries_stop():
    r, events = run(["service_dies:service=compensation-job,start=6m"], duration="12m")
    (inc,) = r.incidents
    assert inc.detect_from == at(6) and inc.end == at(12)
    assert [i.to_dict() for i in inc.expect] == [
        {"kind": "service_down", "service": "compensation-job", "within_s": 32.0}
    ]
    job = [e for e in events if e.service.name == "compensation-job"]
    assert job and all(e.timestamp < at(6) for e in job)
    assert all(e.heartbeat.status != "stopping" for e in job if e.heartbeat is not None)
    assert any(e.event.action == "channel_query_result" for e in job)


def test_one_instance_dies_and_comes_back():
    r, events = run(["service_dies:service=order-service,instances=1,start=3m,duration=2m"], duration="8m")
    (inc,) = r.incidents
    assert inc.expect[0].kind == "heartbeat_missing" and inc.expect[0].service == "order-service"
    beats = defaultdict(list)
    for e in events:
        if e.heartbeat is not None and e.service.name == "order-service":
            beats[e.service.instance.id].append(e.timestamp)
    silent = [i for i, ts in beats.items() if not any(at(3) <= t < at(5) for t in ts)]
    assert len(silent) == 1
    assert any(t >= at(5) for t in beats[silent[0]])  # restarted
    assert len(beats) == 3


def test_query_api_flaky_makes_queries_fail_and_pages_nothing():
    r, events = run(["query_api_flaky:channel=wechatpay,start=3m,duration=6m,error=0.8"], duration="12m")
    (inc,) = r.incidents
    assert inc.expect == []
    q = [e for e in events if e.event.action == "channel_query_result" and e.payment.channel == "wechatpay"]
    inside = [e for e in q if at(3) <= e.timestamp < at(9)]
    failed = [e for e in inside if e.payment.error_code == "QUERY_TIMEOUT"]
    assert len(failed) / len(inside) > 0.6
    assert not any(e.payment.error_code == "QUERY_TIMEOUT" for e in q if not at(3) <= e.timestamp < at(9))
    assert inc.detect_from == failed[0].timestamp
    # The fake channel query servers can ask the same truth how flaky to be.
    assert r.truth.query_error_rate("wechatpay", at(5)) == 0.8
    assert r.truth.query_error_rate("wechatpay", at(10)) == 0.0
    assert r.truth.query_error_rate("alipay", at(5)) == 0.0


def test_scenarios_compose_and_leave_the_traffic_before_them_untouched():
    _, base_events = run(["normal"], duration="15m")
    both, events = run(
        ["channel_down:channel=bank_a,start=6m,duration=2m,rate=0", "service_dies:service=callback-receiver,start=10m"],
        duration="15m",
    )
    assert [i.id for i in both.incidents] == ["inc-1", "inc-2"]
    assert [i.scenario for i in both.incidents] == ["channel_down", "service_dies"]
    before = [encode(e) for e in base_events if e.timestamp < at(6)]
    assert before == [encode(e) for e in events if e.timestamp < at(6)]
    assert not any(e.event.action == "channel_callback" and e.timestamp >= at(10) for e in events)
    line = json.loads(encode_incident(both.incidents[1]))
    assert list(line) == ["id", "scenario", "start", "end", "detect_from", "expect"]
    assert line["start"] == "2026-01-15T02:10:00Z"


def test_scenario_specs_are_parsed_strictly():
    s = parse_scenario("callback_outage:channel=bank_a,start=20m,duration=90s")
    assert (s.channel, s.start, s.duration) == ("bank_a", 1200.0, 90.0)
    assert parse_duration("1.5h") == 5400.0
    for bad in ("nope", "callback_outage:channel=paypal", "callback_outage:start=soon",
                "channel_down:fail=2", "callback_outage:colour=red", "callback_outage:mode=maybe"):  # fmt: skip
        with pytest.raises(ScenarioError):
            parse_scenario(bad)
    with pytest.raises(ScenarioError, match="stops all traffic"):
        simulate(["service_dies:service=payment-gateway"], duration="1m")


# ---------------------------------------------------------------- channel truth lookup


def test_channel_record_answers_as_of_a_moment():
    r, events = run(["normal"], duration="5m", seed=2)
    cb = next(e for e in events if e.event.action == "channel_callback" and e.payment.channel == "wechatpay")
    attempt_id = cb.payment.attempt_id
    req = next(e for e in events if e.event.action == "payment_requested" and e.payment.attempt_id == attempt_id)
    final = r.truth.channel_record("wechatpay", attempt_id=attempt_id)
    assert final.status == "paid" and final.paid_at <= cb.timestamp
    assert final.amount_minor == cb.payment.amount_minor and final.order_id == cb.payment.order_id
    assert r.truth.channel_record("wechatpay", attempt_id=attempt_id, at=req.timestamp).status == "pending"
    assert r.truth.channel_record("wechatpay", attempt_id=attempt_id, at=req.timestamp - timedelta(seconds=5)) is None
    assert r.truth.channel_record("alipay", attempt_id=attempt_id) is None  # another channel never saw it
    by_order = r.truth.channel_record("wechatpay", order_id=cb.payment.order_id)
    assert by_order.attempt_id == attempt_id
    assert r.truth.lookup("wechatpay")(attempt_id) == final
    assert r.truth.lookup("wechatpay")("no-such-attempt") is None
    closed = [
        r.truth.channel_record(e.payment.channel, attempt_id=e.payment.attempt_id)
        for e in events
        if e.event.action == "payment_requested" and e.payment.channel == "alipay"
    ]
    assert Counter(c.status for c in closed)["closed"] > 10  # abandoned wallet orders close silently


# ---------------------------------------------------------------- command line


def test_cli_writes_events_and_truth(tmp_path):
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    result = CliRunner().invoke(
        simulate_command,
        [
            *("-s", "duplicate_burst:start=1m,duration=1m", "--duration", "3m", "--seed", "4"),
            *("-o", str(out), "--truth", str(truth), "--telemetry", "direct"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert len(lines) > 1000 and all(decode(line) for line in lines)
    (inc,) = [json.loads(line) for line in truth.read_text().splitlines()]
    assert inc["scenario"] == "duplicate_burst" and inc["expect"][0]["within_s"] == 10.0
    _, same = run(["duplicate_burst:start=1m,duration=1m"], seed=4, duration="3m")
    assert lines == [encode(e) for e in same]


def test_cli_rejects_bad_scenarios_clearly():
    result = CliRunner().invoke(simulate_command, ["-s", "callback_outage:chanel=alipay", "--duration", "1m"])
    assert result.exit_code == 2
    assert "bad parameter 'chanel=alipay'" in result.output


def test_cli_start_takes_an_offset_and_means_the_same_instant(tmp_path):
    outs = []
    for start in ("2026-01-15T02:00:00Z", "2026-01-15T10:00:00+08:00"):
        out = tmp_path / f"{len(outs)}.jsonl"
        args = ["--start", start, "--duration", "20s", "--telemetry", "direct", "-o", str(out)]
        assert CliRunner().invoke(simulate_command, args).exit_code == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]
    bad = CliRunner().invoke(simulate_command, ["--start", "2026-01-15T10:00:00", "--duration", "1s"])
    assert bad.exit_code == 2 and "--start" in bad.output
