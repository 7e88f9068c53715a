"""`paywatch replay`: event-time clock, byte-identical output, bad lines reported, scoring."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from test_detectors import T0, beat, pay

from paywatch.app.cli import main
from paywatch.contract import encode
from paywatch.detectors.scoring import score
from paywatch.finding import Evidence, FindingPayment, FindingService, decode_finding, make_finding
from paywatch.truth import Expectation, Incident, read_truth


def _events_file(path) -> None:
    events = [beat(t, "compensation-job", "c1") for t in range(0, 40, 5)]
    for i in range(30):
        events.append(pay(100 + i, "payment_requested", f"o{i}", "a1", channel="alipay", amount_minor=990))
        events.append(pay(101 + i, "channel_callback", f"o{i}", "a1", channel="alipay", outcome="success"))
    events.append(pay(300, "order_created", "tail"))
    events.sort(key=lambda e: e.timestamp)
    path.write_bytes(b"".join(encode(e) + b"\n" for e in events))


def _truth_file(path, within_s: float = 30) -> None:
    incidents = [
        {
            "id": "inc-1",
            "scenario": "callback_outage",
            "start": (T0 + timedelta(seconds=100)).isoformat(),
            "end": (T0 + timedelta(seconds=130)).isoformat(),
            "detect_from": (T0 + timedelta(seconds=161)).isoformat(),
            "expect": [{"kind": "paid_but_pending_incident", "channel": "alipay", "within_s": within_s}],
        },
        {
            "id": "inc-2",
            "scenario": "service_dies",
            "start": (T0 + timedelta(seconds=36)).isoformat(),
            "end": (T0 + timedelta(seconds=300)).isoformat(),
            "detect_from": (T0 + timedelta(seconds=35)).isoformat(),
            "expect": [{"kind": "service_down", "service": "compensation-job", "within_s": 17}],
        },
    ]
    path.write_text("".join(json.dumps(i) + "\n" for i in incidents))


def test_replay_is_deterministic_and_scores_against_truth(tmp_path):
    events, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    _events_file(events)
    _truth_file(truth)
    runner = CliRunner()
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = runner.invoke(
            main, ["replay", str(events), "--out", str(tmp_path / name), "--truth", str(truth), "--fail-on-miss"]
        )
        assert result.exit_code == 0, result.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    findings = [decode_finding(line) for line in outs[0].splitlines()]
    opened = [f.finding.kind for f in findings if f.finding.state == "open"]
    assert opened.count("paid_but_pending") == 30
    assert opened.count("paid_but_pending_incident") == 1
    assert "service_down" in opened
    assert "recall 2/2 (100%), false incidents 0" in result.output


def test_replay_fails_on_miss_when_asked(tmp_path):
    events, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    _events_file(events)
    _truth_file(truth, within_s=1)  # the incident opens a few seconds after detect_from
    result = CliRunner().invoke(
        main, ["replay", str(events), "--out", str(tmp_path / "f.jsonl"), "--truth", str(truth), "--fail-on-miss"]
    )
    assert result.exit_code == 1
    assert "MISSED" in result.output


def test_bad_lines_are_reported_with_their_number_and_the_rest_is_replayed(tmp_path):
    events = tmp_path / "events.jsonl"
    good = encode(pay(0, "payment_requested", "o1", "a1", outcome="success"))
    events.write_bytes(good + b"\n{not json\n" + b'{"@timestamp": "2026-03-01T12:00:01Z"}\n')
    out = tmp_path / "f.jsonl"
    result = CliRunner().invoke(main, ["replay", str(events), "--out", str(out), "--drain-s", "61"])
    assert result.exit_code == 0
    assert ":2: rejected: not valid JSON" in result.output
    assert ":3: rejected:" in result.output
    assert "1 events" in result.output and "2 rejected lines" in result.output
    assert [decode_finding(line).finding.kind for line in out.read_bytes().splitlines()] == ["paid_but_pending"]


def _finding(
    seconds: float,
    kind: str,
    state: str = "open",
    channel: str | None = None,
    service: str | None = None,
    level: str | None = None,
):
    return make_finding(
        at=T0 + timedelta(seconds=seconds),
        kind=kind,
        state=state,
        fingerprint=f"{kind}:{channel or service}",
        severity="critical",
        summary="x",
        evidence=Evidence(),
        level=level,
        payment=FindingPayment(channel=channel) if channel else None,
        service=FindingService(name=service) if service else None,
    )


def _incident(**kw) -> Incident:
    base = {
        "id": "inc-1",
        "scenario": "channel_down",
        "start": T0,
        "end": T0 + timedelta(seconds=240),
        "detect_from": T0 + timedelta(seconds=2),
    }
    return Incident(**{**base, **kw})


def test_scoring_catch_window_levels_recovery_and_false_incidents():
    inc = _incident(
        expect=[Expectation("channel_health", 30, channel="bank_b", level="degraded")],
        recover=[Expectation("channel_health", 120, channel="bank_b", level="healthy")],
    )
    findings = [
        _finding(1, "channel_health", channel="bank_b", level="degraded"),  # before detect_from: too early
        _finding(20, "channel_health", channel="bank_b", level="down"),  # down meets degraded
        _finding(300, "channel_health", "resolved", channel="bank_b", level="healthy"),
        _finding(400, "channel_health", channel="alipay", level="degraded"),  # other channel: false
        _finding(500, "heartbeat_missing", service="checkout"),  # no incident for it: false
        _finding(600, "duplicate_charge_incident"),  # no subject, inside slack of inc-1: explained
        _finding(700, "paid_but_pending", channel="bank_b"),  # not incident-level
    ]
    result = score(findings, [inc])
    [caught, recovered] = result.outcomes
    assert caught.caught and caught.delay_s == 18
    assert recovered.caught and recovered.recovery and recovered.delay_s == 60
    assert [f.finding.fingerprint for f in result.false_incidents] == [
        "channel_health:alipay",
        "heartbeat_missing:checkout",
    ]
    assert result.recall == 1.0


def test_scoring_misses_late_or_wrong_subject():
    inc = _incident(expect=[Expectation("service_down", 17, service="compensation-job")])
    late = score([_finding(20, "service_down", service="compensation-job")], [inc])
    wrong = score([_finding(5, "service_down", service="checkout")], [inc])
    assert late.recall == 0 and late.missed[0].kind == "service_down"
    assert wrong.recall == 0 and len(wrong.false_incidents) == 1


def test_read_truth_parses_the_team_format():
    line = json.dumps(
        {
            "id": "inc-1",
            "scenario": "callback_outage",
            "start": "2026-01-15T02:05:00Z",
            "end": "2026-01-15T02:10:00Z",
            "detect_from": "2026-01-15T02:06:03Z",
            "expect": [{"kind": "paid_but_pending_incident", "channel": "alipay", "within_s": 30}],
        }
    )
    [inc] = read_truth([line])
    assert inc.expect[0].channel == "alipay" and inc.detect_from.tzinfo is not None


def test_an_incident_naming_no_channel_explains_findings_on_any_channel():
    inc = _incident(scenario="callback_outage", expect=[Expectation("duplicate_charge_incident", 10)])
    result = score([_finding(3, "duplicate_charge_incident", channel="alipay")], [inc])
    assert result.recall == 1.0 and result.false_incidents == []
