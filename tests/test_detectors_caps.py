"""Caps on the names producers can make the detectors track (detectors/cardinality.py): a flood of
made-up services, instances, channels or merchants costs one `cardinality_capped` finding and
bounded memory, not state and a page per name."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts_support import rules

from paywatch.alerts.engine import AlertEngine
from paywatch.contract import Event, EventMeta, Heartbeat, Payment, Service, ServiceInstance
from paywatch.detectors.engine import DetectionEngine
from paywatch.detectors.settings import DetectorSettings
from paywatch.finding import Finding

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def beat(at: datetime, service: str, instance: str = "i-1", seq: int = 1) -> Event:
    return Event(
        timestamp=at,
        event=EventMeta(id=f"hb-{service}-{instance}-{seq}", dataset="paywatch.heartbeat"),
        service=Service(name=service, instance=ServiceInstance(id=instance)),
        heartbeat=Heartbeat(interval_s=10, seq=seq, status="up"),
    )


def pay(at: datetime, action: str, order: str, channel: str, outcome: str | None = None, **payment) -> Event:
    return Event(
        timestamp=at,
        event=EventMeta(id=f"{action}-{order}", dataset="paywatch.payment", action=action, outcome=outcome),
        service=Service(name="gw", instance=ServiceInstance(id="gw-1")),
        payment=Payment(order_id=order, attempt_id=f"{order}-a", channel=channel, **payment),
    )


def capped(found: list[Finding]) -> list[tuple[str, str, object]]:
    return [
        (f.finding.state, f.finding.evidence.figures["dimension"], f.finding.evidence.figures["cap"])
        for f in found
        if f.finding.kind == "cardinality_capped"
    ]


def live(engine: DetectionEngine, events: list[Event], seconds: int) -> list[Finding]:
    """Feed events as they arrive at `NOW`, then tick the wall clock for `seconds`."""
    found: list[Finding] = []
    for event in events:
        found += engine.feed(event, NOW)
    for s in range(1, seconds + 1):
        found += engine.tick(NOW + timedelta(seconds=s))
    return found


def test_5000_service_names_are_one_capped_finding_one_page_and_bounded_state():
    engine = DetectionEngine()
    cap = engine.settings.max_services
    found = live(engine, [beat(NOW, f"svc-{n}") for n in range(5000)], 5)
    assert capped(found) == [("open", "services", cap)]
    assert (len(engine.heartbeats.instances), len(engine.heartbeats.services)) == (cap, cap)
    assert engine.heartbeats.service_cap.refused == 5000 - cap
    [finding] = [f for f in found if f.finding.kind == "cardinality_capped"]
    assert "'svc-1000'" in finding.finding.summary and "detectors.max_services" in finding.finding.summary
    # a tracked service keeps being judged, a refused one never is
    more = live(engine, [beat(NOW + timedelta(seconds=6), "svc-0", seq=2), beat(NOW, "svc-4999", seq=2)], 0)
    assert capped(more) == [] and ("svc-4999", "i-1") not in engine.heartbeats.instances
    # through the alert engine (the shipped rules): one page for the cap, however many names were refused
    alerts = AlertEngine(rules())
    changes = [c for f in found + more for c in alerts.on_finding(f)]
    assert [c.reason for c in changes if c.page and c.alert.labels["alertname"] == "CardinalityCapped"] == ["opened"]


def test_instances_are_capped_and_the_cap_resolves_once_forgotten_ones_leave():
    engine = DetectionEngine(DetectorSettings(max_instances=50, heartbeat_forget_s=60))
    found = live(engine, [beat(NOW, "gw", f"gw-{n}") for n in range(80)], 0)
    assert capped(found) == [("open", "instances", 50)] and len(engine.heartbeats.instances) == 50
    # they all fall silent; a day of silence later the table forgets them and the cap resolves
    found = live(engine, [], 120)
    assert capped(found) == [("resolved", "instances", 50)] and not engine.heartbeats.instances
    assert capped(live(engine, [beat(NOW + timedelta(seconds=121), "gw", "gw-new")], 0)) == []


def _channel_flood(names: int, events: int) -> tuple[DetectionEngine, list[Finding]]:
    """`events` attempts spread over `names` channels, judged over a minute."""
    engine = DetectionEngine()
    flood = [
        pay(NOW, "payment_requested", f"o-{n}", f"ch-{n % names}", "failure", error_category="channel")
        for n in range(events)
    ]
    return engine, live(engine, flood, 60)


def _traced_size(names: int, events: int) -> int:
    """The traced memory the flood leaves behind (the engine and its findings kept)."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = _channel_flood(names, events)  # alive while measured
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
        del kept
        return size
    finally:
        tracemalloc.stop()


def _flood_sizes(cap: int) -> tuple[int, int]:
    """The traced memory after 20,000 events over 20,000 channels, and over `cap` channels, each
    measured in a fresh interpreter: in a long-lived test process, what other tests left (warmed
    caches, a worker's different history) shifts tracemalloc's figures by megabytes."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_detectors_caps import _traced_size; "
        f"print(json.dumps([_traced_size(n, 20_000) for n in (20_000, {cap})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    flooded, at_cap = json.loads(out.stdout.splitlines()[-1])
    return flooded, at_cap


def test_20000_channel_names_add_bounded_memory():
    engine, found = _channel_flood(20_000, 20_000)
    cap = engine.settings.max_channels
    assert capped(found) == [("open", "channels", cap)] and len(engine.judge.channels) == cap
    # the same events over as many channels as the cap: 19,000 more names cost (almost) nothing
    flooded, at_cap = _flood_sizes(cap)
    assert flooded - at_cap < 4 * 1024 * 1024, (flooded, at_cap)
    # and paging per name stays bounded: no channel past the cap is judged
    judged = {f.payment.channel for f in found if f.finding.kind == "channel_health"}
    assert len(judged) <= cap


def test_merchants_past_the_cap_are_counted_and_still_in_the_platform_wide_rollup():
    engine = DetectionEngine(DetectorSettings(max_merchants=5))
    stuck = [
        pay(NOW, "channel_callback", f"o-{n}", "alipay", "success", merchant_id=f"m-{n}", amount_minor=100)
        for n in range(12)
    ]
    found = live(engine, stuck, 120)
    assert capped(found) == [("open", "merchants", 5)]
    merchants = {key for _, key in engine.judge.incidents.rollups if key.startswith("merchant:")}
    assert len(merchants) <= 5
    # the jam itself still pages, from the channel's rollup, naming all twelve orders
    incidents = [f for f in found if f.finding.kind == "paid_but_pending_incident" and f.finding.state == "open"]
    assert incidents and max(f.finding.evidence.figures["orders"] for f in incidents) == 12
