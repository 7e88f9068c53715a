"""paywatch's own clock against the producers' clocks: the watermark, judging at arrival,
liveness by arrival, `clock_skew`, and flapping that never hides a death. Hand-built events,
event time only (no wall clock)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from test_detectors import T0, Run, beat, pay, secs

from paywatch.contract import Event, EventMeta, Heartbeat, Service, ServiceInstance
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.replay import replay_events
from paywatch.detectors.settings import DetectorSettings
from paywatch.detectors.timebase import Timebase, to_ms

S = 1000
BASE = to_ms(T0)
_seq = itertools.count(1)


def hb(t: float, service: str, instance: str, *, skew: float = 0.0, interval_s: float = 10.0, **kw) -> Event:
    """A beat sent at true time `t` by a host whose clock is `skew` seconds off."""
    return Event(
        timestamp=T0 + timedelta(seconds=t + skew),
        event=EventMeta(id=f"hb-{instance}-{t}-{next(_seq)}", dataset="paywatch.heartbeat"),
        service=Service(name=service, instance=ServiceInstance(id=instance)),
        heartbeat=Heartbeat(interval_s=interval_s, seq=kw.pop("seq", next(_seq)), status=kw.pop("status", "up")),
    )


def fleet(until: float, *, skews: dict[str, float] | None = None, dead: dict[str, float] | None = None) -> list[Event]:
    """Five instances of two services beating every 10 s at staggered phases, in arrival (true
    time) order. `skews` puts an instance's host clock off; `dead` stops an instance at a time."""
    skews, dead = skews or {}, dead or {}
    names = [("api", "api-1"), ("api", "api-2"), ("api", "api-3"), ("job", "job-1"), ("job", "job-2")]
    rows = []
    for phase, (service, instance) in enumerate(names):
        t = phase * 2.0
        while t <= until and t < dead.get(instance, float("inf")):
            rows.append((t, instance, service))
            t += 10.0
    rows.sort()
    return [hb(t, service, instance, skew=skews.get(instance, 0.0)) for t, instance, service in rows]


def replayed(events: list[Event], drain_s: float = 0.0, settings: DetectorSettings | None = None) -> list:
    return list(replay_events(events, DetectionEngine(settings or DetectorSettings()), drain_s=drain_s))


def pages(findings: list) -> list:
    paging = ("heartbeat_missing", "service_down")
    return [f for f in findings if f.finding.state == "open" and f.finding.kind in paging]


# --- the watermark ----------------------------------------------------------------------------


def test_watermark_is_the_time_a_quorum_of_producers_reached():
    clock = Timebase(share=0.3)  # of up to 6 producers: 2
    assert clock.observe("a", BASE) == BASE  # alone, a producer is the only evidence
    assert clock.observe("b", BASE + 2 * S) == BASE + 2 * S  # two cannot outvote each other: the newest
    assert not clock.established
    assert clock.observe("c", BASE + 1 * S) == BASE + 2 * S and clock.established  # never backwards
    assert clock.observe("x", BASE + 40 * S) == BASE + 2 * S  # x ahead: nobody else got there
    assert clock.observe("a", BASE + 5 * S) == BASE + 5 * S  # a and x have reached 5 s
    assert clock.observe("c", BASE + 3 * S) == BASE + 5 * S  # behind: changes nothing
    assert clock.observe("c", BASE + 7 * S) == BASE + 7 * S
    assert clock.observe("a", BASE + 4 * S) == BASE + 7 * S  # an old event again: nothing


def test_the_quorum_is_a_share_of_the_producers_heard_from_recently():
    """Ten producers, two of them 40 s ahead: the quorum is three, so the clock is a right one's."""
    clock = Timebase(share=0.3, window_ms=300 * S)
    for t in range(0, 60, 10):
        for i in reversed(range(10)):
            clock.observe(f"p{i}", BASE + (t + (40 if i < 2 else 0) + i / 10) * S)
        # three have reached it, so at least one right clock: never beyond the newest right claim
        assert BASE + t * S < clock.now <= BASE + (t + 0.9) * S
    # eight of them go quiet: after the window only the two ahead are left, and two cannot be
    # outvoted: the clock follows the newest (documented in docs/detectors.md, Limitations)
    for t in range(60, 700, 10):
        clock.observe("p0", BASE + (t + 40) * S)
        clock.observe("p1", BASE + (t + 40.1) * S)
    assert sorted(clock.latest) == ["p0", "p1"] and clock.now == BASE + (690 + 40.1) * S


def test_a_producer_years_ahead_never_moves_the_watermark():
    clock = Timebase(future_ms=600 * S)
    clock.observe("a", BASE)  # alone: its claim is the clock
    assert clock.observe("b", BASE + 70 * 365 * 86400 * S) == BASE
    assert clock.far(BASE + 70 * 365 * 86400 * S) and clock.far(BASE - 2 * 86400 * S)
    assert not clock.far(BASE + 40 * S)


def test_a_lone_survivor_moves_the_watermark_at_its_own_offset():
    """When every other producer is silent, the clock follows the last one, corrected by how far
    it was ahead of the others, so their silence becomes visible."""
    clock = Timebase(stall_ms=60 * S)
    for t in range(0, 100, 10):
        clock.observe("ahead", BASE + (t + 40) * S)  # 40 s ahead
        clock.observe("right", BASE + t * S)
        clock.observe("right-too", BASE + t * S + 1)
    assert clock.now == BASE + 90 * S + 1
    for t in range(100, 300, 10):
        clock.observe("ahead", BASE + (t + 40) * S)  # the others died at 90 s
    assert BASE + 290 * S - 60 * S <= clock.now <= BASE + 290 * S + 1  # at right-too's offset


def test_events_are_judged_at_their_own_time_only_when_close_to_paywatchs_clock():
    clock = Timebase(tolerance_ms=10 * S)
    assert clock.judge(BASE) == BASE  # no clock yet: the claim is all there is
    clock.tick(BASE + 100 * S)
    assert clock.judge(BASE + 95 * S) == BASE + 95 * S
    assert clock.judge(BASE + 108 * S) == BASE + 108 * S
    assert clock.judge(BASE + 60 * S) == BASE + 100 * S  # 40 s behind: judged on arrival
    assert clock.judge(BASE + 140 * S) == BASE + 100 * S  # 40 s ahead: judged on arrival


# --- liveness by arrival ----------------------------------------------------------------------


def test_hosts_40_s_behind_and_ahead_page_nothing_for_themselves_or_anyone_else():
    events = fleet(900, skews={"api-2": -40, "job-1": +40})
    found = replayed(events)
    assert pages(found) == [], [(f.finding.fingerprint, secs(f)) for f in pages(found)]
    assert [f for f in found if f.finding.kind == "service_flapping"] == []


def test_clock_skew_names_each_skewed_host_within_2_min_and_nobody_else():
    found = replayed(fleet(900, skews={"api-2": -40, "job-1": +40}))
    opened = {f.finding.fingerprint: secs(f) for f in found if f.finding.kind == "clock_skew"}
    assert set(opened) == {"clock_skew:api:api-2", "clock_skew:job:job-1"}
    assert all(t <= 120 for t in opened.values()), opened
    [skew] = [f for f in found if f.finding.fingerprint == "clock_skew:api:api-2"]
    assert skew.finding.severity == "warning" and skew.finding.evidence.figures["skew_s"] < -35


def test_a_skewed_host_that_dies_is_paged_within_interval_times_grace_plus_10_s():
    for skew in (-40, +40):
        found = replayed(fleet(600, skews={"api-2": skew}, dead={"api-2": 300}))
        [missing] = pages(found)
        assert missing.finding.fingerprint == "heartbeat_missing:api:api-2"
        assert 300 <= secs(missing) <= 300 + 10 * 3 + 10, (skew, secs(missing))


def test_clock_skew_resolves_when_the_host_clock_is_fixed():
    events = fleet(300, skews={"api-1": -40}) + [
        e for e in fleet(700) if (e.timestamp - T0).total_seconds() > 300 + 5
    ]  # NTP back at 300 s
    found = replayed(events)
    states = [f.finding.state for f in found if f.finding.fingerprint == "clock_skew:api:api-1"]
    assert states == ["open", "resolved"] and pages(found) == []


def test_a_beat_dated_years_ahead_is_flagged_and_does_not_hide_a_later_death():
    events = fleet(600, dead={"job-2": 400})
    stray = hb(200, "job", "job-2", skew=70 * 365 * 86400.0)
    events.insert(next(i for i, e in enumerate(events) if e.timestamp > T0 + timedelta(seconds=200)), stray)
    found = replayed(events)
    [skew] = [f for f in found if f.finding.kind == "clock_skew" and f.finding.state == "open"]
    # flagged at once, at paywatch's clock (which trails the beats by the quorum's lag)
    assert skew.finding.fingerprint == "clock_skew:job:job-2" and 195 <= secs(skew) <= 201
    [missing] = pages(found)
    assert missing.finding.fingerprint == "heartbeat_missing:job:job-2" and 400 <= secs(missing) <= 432


def test_re_delivered_old_beats_do_not_bring_a_dead_instance_back():
    events = fleet(400, dead={"job-2": 100})
    old = [e for e in events if e.service.instance.id == "job-2"]
    at = next(i for i, e in enumerate(events) if e.timestamp > T0 + timedelta(seconds=200))
    found = replayed(events[:at] + old + events[at:])
    assert [(f.finding.kind, f.finding.state) for f in found if f.service.instance and f.service.name == "job"] == [
        ("heartbeat_missing", "open")
    ]


def test_an_instance_changing_its_announced_interval_is_judged_by_the_new_one():
    r = Run()
    r.play([beat(t, "svc", "s1", interval_s=5) for t in range(0, 30, 5)])
    r.play([beat(t, "svc", "s1", interval_s=30) for t in range(30, 300, 30)])  # slower from 30 s on
    r.play([beat(t, "svc", "s1", interval_s=5) for t in range(300, 400, 5)])  # and faster again
    r.until(400)
    assert r.of("heartbeat_missing") == []
    r.until(420)
    assert secs(r.of("heartbeat_missing", "open")[0]) == 395 + 15


# --- flapping never hides a death ----------------------------------------------------------------


def test_a_flapping_instance_that_stays_silent_is_paged_after_the_bound():
    r = Run(DetectorSettings(flapping_page_after_s=120))
    t = 0
    for _ in range(4):
        r.play([beat(t, "sdk", "s1"), beat(t + 5, "sdk", "s1")])
        t += 30  # 25 s silent > 15 s, then back: flapping from the third gap
    assert len(r.of("service_flapping", "open")) == 1
    opened = len(r.of("heartbeat_missing", "open"))
    r.until(t + 600)  # dies for good: silent since t - 25
    late = r.of("heartbeat_missing", "open")[opened:]
    assert len(late) == 1 and secs(late[0]) == (t - 25) + 120


# --- payments from a skewed host ------------------------------------------------------------------


def test_payments_stamped_by_a_host_40_s_behind_open_no_false_paid_but_pending():
    """The gateway's clock is 40 s behind: its success is stamped 40 s early. Judged at arrival, the
    order paid 30 s later (inside the 60 s grace) is not stuck."""
    r = Run()
    for i in range(10):
        t = 10.0 + i
        r.until(t)
        late = pay(t - 40, "payment_requested", f"o{i}", "a1", outcome="success")
        r.feed(late)
        r.until(t + 30)
        r.feed(pay(t + 30, "order_paid", f"o{i}", channel=None))
    r.until(200)
    assert r.of("paid_but_pending") == [] and r.of("paid_but_pending_incident") == []


def test_live_events_are_judged_at_their_arrival_by_the_wall_clock():
    """The embedded pipeline passes the wall clock at ingest: two producers, one 40 s behind and
    one 40 s ahead (too few for a watermark to outvote either), are both judged on arrival."""
    engine = DetectionEngine()
    found = []
    for t in range(0, 400):
        wall = T0 + timedelta(seconds=t)
        found += engine.tick(wall)
        if t % 10 == 0:
            found += engine.feed(hb(t, "job", "behind", skew=-40), arrived=wall)
            if t < 200:
                found += engine.feed(hb(t, "job", "ahead", skew=+40), arrived=wall)
    skewed = {f.finding.fingerprint for f in found if f.finding.kind == "clock_skew" and f.finding.state == "open"}
    assert skewed == {"clock_skew:job:behind", "clock_skew:job:ahead"}
    [missing] = pages(found)
    assert missing.finding.fingerprint == "heartbeat_missing:job:ahead" and secs(missing) == 190 + 30


def test_a_live_reader_caps_the_watermark_at_its_wall_clock():
    """A Kafka partition with two producers cannot outvote one 40 s ahead; its wall clock can."""
    clock = Timebase()
    wall = BASE + 100 * S
    clock.observe("right", BASE + 99 * S, wall)
    assert clock.observe("ahead", BASE + 139 * S, wall) == wall
    assert clock.judge(BASE + 99 * S) == BASE + 99 * S and clock.judge(BASE + 139 * S) == wall


def test_a_kafka_heartbeat_partition_judges_skewed_hosts_like_replay():
    """`paywatch detect` reading a backlog: the partition's own clock gives the same findings."""
    from test_detectors_partials import Msg

    from paywatch.app.config import Config
    from paywatch.contract import encode
    from paywatch.detectors.runtime import PartitionWorker, _Heartbeats
    from paywatch.finding import decode_finding

    events = fleet(900, skews={"api-2": -40, "job-1": +40}, dead={"api-2": 600})
    config = Config()
    worker = PartitionWorker(config, "g", 1, "w", heartbeat_partitions=1)
    worker.heartbeats[0] = _Heartbeats(worker, 0, live_from=len(events) + 1)
    out = []
    for offset, e in enumerate(events):
        out += worker.handle(Msg(config.kafka.topics.heartbeats, 0, offset, encode(e)))
    kafka = [decode_finding(o.value) for o in out if o.topic == config.kafka.topics.findings]

    def key(findings: list) -> list:
        return [(f.timestamp, f.finding.fingerprint, f.finding.state) for f in findings]

    assert key(kafka) == key(replayed(events))
    assert {fp for _, fp, state in key(kafka) if state == "open"} == {
        "clock_skew:api:api-2",
        "clock_skew:job:job-1",
        "heartbeat_missing:api:api-2",
    }


@pytest.mark.timeout(60)  # the tick over the jump used to never finish
def test_a_charge_stamped_in_year_1_before_the_clock_is_known_costs_no_time():
    """Before any claim sets paywatch's clock an event is judged at its own claim, so one stamped
    0001-01-01 puts a deadline and a window 2,025 years back; then today's events move the clock.
    The detectors run what is due (the timer wheel's due seconds, one empty window for the
    stretch) instead of every second and window in between, which never finished: a fuzzed body
    stalled detection that way."""
    engine = DetectionEngine()
    ancient = pay(0, "channel_callback", "o-ancient", "a-ancient", outcome="success")
    engine.feed(msgspec.structs.replace(ancient, timestamp=datetime(1, 1, 1, tzinfo=UTC)))
    for n in range(3):
        engine.feed(pay(n, "payment_requested", f"o{n}", f"a{n}"))
    now = engine.clock.now + 120 * S
    assert len(list(engine.windows.close_until(now))) == 5  # year 1, its stretch, today's two, the quiet after

    found = engine.tick_ms(now)
    stuck = [f for f in found if f.finding.kind == "paid_but_pending" and f.finding.state == "open"]
    assert [f.payment.order_id for f in stuck] == ["o-ancient"]
