"""`paywatch replay --pages`: the findings through the shipped alert rules, scored as pages."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

import msgspec
from click.testing import CliRunner
from test_detectors import T0
from test_replay import _events_file, _incident, _truth_file

from paywatch.alerts.rules import load_rules
from paywatch.app.backtest import Page, decode_page, page_marks, score_pages
from paywatch.app.cli import main
from paywatch.truth import Expectation


def test_replay_writes_the_pages_on_call_would_have_received(tmp_path):
    events, truth, pages = tmp_path / "events.jsonl", tmp_path / "truth.jsonl", tmp_path / "pages.jsonl"
    _events_file(events)
    _truth_file(truth)
    result = CliRunner().invoke(
        main, ["replay", str(events), "--pages", str(pages), "--truth", str(truth), "--fail-on-miss"]
    )
    assert result.exit_code == 0, result.output
    written = [decode_page(line) for line in pages.read_bytes().splitlines()]
    assert [(p.status, p.alertname, p.labels) for p in written] == [
        ("firing", "ServiceDown", {"service": "compensation-job"}),
        ("firing", "PaidButPending", {"channel": "alipay"}),
    ]
    # 30 stuck orders: one page, sent when the fifth is stuck (page_at), naming them — not 30 pages
    assert written[1].summary.startswith("5 orders paid at alipay")
    assert "Orders: o0, o1, o2, o3, o4" in written[1].description
    assert "— pages" in result.output
    assert result.output.count("recall 2/2 (100%)") == 2 and "false pages 0" in result.output


def test_a_rule_that_stops_paging_is_judged_as_a_miss(tmp_path):
    """What an SRE runs before changing a rule: the same history with the new rules misses the incident."""
    events, truth, pages = tmp_path / "events.jsonl", tmp_path / "truth.jsonl", tmp_path / "pages.jsonl"
    _events_file(events)
    _truth_file(truth)
    rules = msgspec.yaml.decode((resources.files("paywatch.alerts") / "rules.yaml").read_bytes())
    for rule in rules["rules"]:
        if rule["kind"] == "service_down":
            rule["page"] = False
    custom = tmp_path / "rules.yaml"
    custom.write_bytes(msgspec.yaml.encode(rules))
    args = ["replay", str(events), "--pages", str(pages), "--rules", str(custom), "--truth", str(truth)]
    result = CliRunner().invoke(main, [*args, "--fail-on-miss"])
    assert result.exit_code == 1
    assert "service_down" in result.output and "MISSED" in result.output.split("— pages")[1]


def test_replay_needs_somewhere_to_write(tmp_path):
    events = tmp_path / "events.jsonl"
    _events_file(events)
    result = CliRunner().invoke(main, ["replay", str(events)])
    assert result.exit_code == 2 and "--pages" in result.output and "Traceback" not in result.output


def _page(seconds: float, status: str, alertname: str, **labels: str) -> Page:
    return Page(
        at=T0 + timedelta(seconds=seconds),
        status=status,  # type: ignore[arg-type]
        alertname=alertname,
        severity="critical",
        labels=labels,
        summary="x",
        fingerprint=f"{alertname}:{sorted(labels.items())}",
    )


def test_a_channel_recovers_when_its_last_page_resolves_not_when_degraded_turns_down():
    pages = [
        _page(10, "firing", "ChannelDegraded", channel="bank_b"),
        _page(30, "resolved", "ChannelDegraded", channel="bank_b"),  # … because it is now down
        _page(30, "firing", "ChannelDown", channel="bank_b"),
        _page(300, "resolved", "ChannelDown", channel="bank_b"),
    ]
    inc = _incident(
        end=T0 + timedelta(seconds=20),
        expect=[Expectation("channel_health", 30, channel="bank_b", level="degraded")],
        recover=[Expectation("channel_health", 600, channel="bank_b", level="healthy")],
    )
    result = score_pages(pages, [inc], load_rules())
    caught, recovered = result.outcomes
    assert caught.caught and caught.delay_s == 8
    assert recovered.caught and recovered.delay_s == 280  # the ChannelDown resolve, not the hand-over at 30 s
    assert [m.level for m in page_marks(pages, load_rules())] == ["degraded", "down", "healthy"]


def test_pages_of_rules_without_a_channel_label_speak_for_every_channel():
    """DuplicateCharge groups by nothing (duplicates are counted across channels): it meets a channel's item."""
    expect = [Expectation("duplicate_charge_incident", 10, channel="wechatpay")]
    inc = _incident(scenario="duplicate_burst", expect=expect)
    hit = score_pages([_page(5, "firing", "DuplicateCharge")], [inc], load_rules())
    wrong_channel = score_pages([_page(5, "firing", "PaidButPending", channel="alipay")], [inc], load_rules())
    assert hit.recall == 1.0 and hit.false_incidents == []
    assert wrong_channel.recall == 0.0 and len(wrong_channel.false_incidents) == 1


def test_what_the_truth_says_is_recorded_not_paged_is_judged_on_its_finding():
    """A skewed clock is recorded, not paged (`page: false` in the truth): its expectation is met by
    the finding, which is no false alarm; without the findings it is an honest miss. The same finding
    does not meet an expectation that must page."""
    from paywatch.finding import FindingService, FindingServiceInstance, make_finding

    skew = make_finding(
        at=T0 + timedelta(seconds=70),
        kind="clock_skew",
        state="open",
        fingerprint="clock_skew:checkout:c1",
        severity="warning",
        summary="checkout instance c1 stamps its events 40 s behind paywatch's clock",
        service=FindingService(name="checkout", instance=FindingServiceInstance(id="c1")),
    )
    inc = _incident(scenario="clock_skew", expect=[Expectation("clock_skew", 120, service="checkout", page=False)])
    with_findings = score_pages([], [inc], load_rules(), [skew])
    assert with_findings.recall == 1.0 and with_findings.false_incidents == []
    assert score_pages([], [inc], load_rules()).recall == 0.0
    paging = _incident(scenario="clock_skew", expect=[Expectation("clock_skew", 120, service="checkout")])
    assert score_pages([], [paging], load_rules(), [skew]).recall == 0.0
