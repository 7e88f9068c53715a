"""The two backends are one product: the same simulated traffic judged by the embedded pipeline
(SQLite) and by the real Kafka stages (`paywatch detect` → paywatch.findings → `paywatch
collect` → Elasticsearch) gives the same incidents, and both match the simulator's truth.

One run holds every scenario (a merchant's order service jammed, callback outage, channel down,
a quiet channel down, duplicate burst, a dying service, a flaky query API) over 16 simulated minutes at a low order
rate: the merchant's incident crosses the Kafka stage as `merchant:` keys in the window partials.
Its events are timed so the simulation ends now: `paywatch detect` replays them clocked by event
time (a partition is read in event time until it catches up, then follows the wall clock), so
both backends see the same clock, and findings carry event-time timestamps: incidents are
compared exactly, as of a cut-off shortly after the end of the traffic (after it, the Kafka
stage goes on ticking on the wall clock while the embedded run stops)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import NotFoundError
from stack_support import Stages, produce, stack_config

from paywatch.app.config import Config
from paywatch.app.demo import _per_second
from paywatch.app.embedded.pipeline import Pipeline
from paywatch.app.embedded.sqlite_store import SqliteStore
from paywatch.clock import ManualClock
from paywatch.contract import Event, decode, encode
from paywatch.detectors.scoring import score
from paywatch.elastic import ElasticHistory, data_stream
from paywatch.finding import INCIDENT_KINDS, Finding, decode_finding
from paywatch.simulator import simulate
from paywatch.simulator.settings import SimulatorSettings
from paywatch.store import summarise_incidents

pytestmark = [pytest.mark.kafka, pytest.mark.elasticsearch, pytest.mark.slow]

SCENARIOS = [
    "normal",
    "merchant_jam:merchant=m-food-quickbite,share=0.2,start=30s,duration=150s",
    "query_api_flaky:channel=unionpay,start=2m,duration=5m",
    "callback_outage:channel=alipay,start=3m,duration=4m",
    # 2 attempts/s for the whole run: busy enough to judge, not so busy that every stuck order of the
    # merchant's jam lands on bank_b (its rollup would then rightly leave the page to the channel's)
    "channel_down:channel=bank_b,start=6m,duration=3m,fail=0.95,rate=2",
    # a quiet channel (one order per 20 s) failing everything: only the judge's longer spans prove it,
    # and they cross the Kafka stage as summed window partials
    "channel_down:channel=bank_a,start=1m,duration=5m,fail=1,rate=0.05",
    "duplicate_burst:channel=wechatpay,start=10m,duration=2m",
    "service_dies:service=compensation-job,start=12m",
]
DURATION = timedelta(minutes=16)
# Both backends are judged up to this long after the traffic ends: less than a heartbeat grace
# (3 × 10 s), so the services falling silent at the end of the simulation are not yet missing.
DRAIN = timedelta(seconds=15)


def _embedded(config: Config, events: list[Event], until: datetime, tmp: Path) -> tuple[list[dict], list[Finding]]:
    """What the demo does, without HTTP: per simulated second, ingest its events, then tick."""
    clock = ManualClock(events[0].timestamp)
    store = SqliteStore(tmp / "embedded.sqlite", clock=clock)
    try:
        pipeline = Pipeline(config, store, started_at=clock.now())
        findings: list[Finding] = []
        pipeline.listeners.append(findings.append)
        second = clock.now()
        for second, batch in _per_second(iter(events)):
            clock.set(second)
            pipeline.ingest(batch)
            pipeline.tick(second)
        while second < until:
            second += timedelta(seconds=1)
            clock.set(second)
            pipeline.tick(second)
        return store.incidents(limit=1000), findings
    finally:
        store.close()


def _stored_findings(es: Any, namespace: str, until: datetime) -> list[dict]:
    es.indices.refresh(index=data_stream("paywatch.finding", namespace))
    hits = es.search(
        index=data_stream("paywatch.finding", namespace),
        query={"range": {"@timestamp": {"lte": until.isoformat()}}},
        sort=[{"@timestamp": "asc"}, {"event.id": "asc"}],
        size=10_000,
    )["hits"]["hits"]
    return [h["_source"] for h in hits]


def _key(row: dict) -> tuple:
    def at(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))

    return (
        row["fingerprint"],
        row["kind"],
        row["channel"],
        row["service"],
        at(row["opened_at"]),
        at(row["resolved_at"]),
    )


def _simulated_services(rows: list[dict]) -> list[dict]:
    """The Kafka stages send their own heartbeats into the same table (paywatch-collect,
    paywatch-detect); the embedded pipeline has no such processes. Compare the traffic's incidents."""
    return [r for r in rows if not (r["service"] or "").startswith("paywatch-")]


def _offset_to_local(at: datetime, hour: int) -> float:
    """The UTC offset (hours, in [-12, 12)) at which `at` is `hour`:00 local time, to the minute."""
    offset = hour - (at.hour + at.minute / 60)
    return (offset + 12) % 24 - 12


def test_embedded_and_kafka_elasticsearch_backends_produce_the_same_incidents(kafka_bootstrap, es_url, es, tmp_path):
    began = time.monotonic()
    config, config_path = stack_config(
        tmp_path,
        kafka_bootstrap,
        es_url,
        alerts={"alertmanager": {"urls": []}, "self_monitor": {"watchdog": False}},
    )
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - DURATION
    run = simulate(
        SCENARIOS,
        seed=3,
        duration=DURATION,
        start=start,
        telemetry="direct",
        # The run must end now (the Kafka stages follow the wall clock once caught up), but the
        # traffic must not depend on when the suite runs: put the simulated customers' clock at
        # 11:00 local whatever the UTC hour, or a night-time run has too few orders for the
        # duplicate burst to page.
        settings=SimulatorSettings(peak_orders_per_s=4, utc_offset_h=_offset_to_local(start, hour=11)),
    )
    # through the contract, as the ingest endpoint and the Kafka stages read them: a simulator
    # event the contract refuses fails here, not as a silent difference between the backends
    events = [decode(encode(e)) for e in run]
    truth = run.incidents
    assert {i.scenario for i in truth} == {s.split(":")[0] for s in SCENARIOS} - {"normal"}
    cutoff = end + DRAIN

    # --- Kafka + Elasticsearch: the real stage processes --------------------------------------
    assert produce(config, events) == len(events)
    stages = Stages(config_path, tmp_path)
    try:
        stages.start("collect")
        stages.start("detect", "--consumer-group", f"detect-{config.elasticsearch.namespace}")
        # embedded meanwhile (same events, same config), so the two runs overlap in wall time
        embedded_rows, embedded_findings = _embedded(config, events, cutoff, tmp_path)

        namespace = config.elasticsearch.namespace
        seen: list[int] = []

        def settled() -> bool:
            """Past the cut-off on the wall clock, and no new finding stored for 15 s."""
            try:
                seen.append(len(_stored_findings(es, namespace, cutoff)))
            except NotFoundError:  # the data stream appears with the first finding
                seen.append(-1)
            lateness = timedelta(seconds=config.detectors.allowed_lateness_s)
            past = datetime.now(UTC) > cutoff + lateness + timedelta(seconds=5)
            return past and len(seen) >= 15 and seen[-1] > 0 and len(set(seen[-15:])) == 1

        stages.wait_for(settled, 600, "the detector's findings to be stored in Elasticsearch and settle")
    finally:
        stages.stop_all()

    stored = _stored_findings(es, namespace, cutoff)
    kafka_findings = [decode_finding(json.dumps(doc).encode()) for doc in stored]
    kafka_rows = summarise_incidents(doc for doc in stored if doc["finding"]["kind"] in INCIDENT_KINDS)

    # the backends agree, incident for incident, to the millisecond
    embedded_keys = sorted(map(_key, _simulated_services(embedded_rows)), key=str)
    kafka_keys = sorted(map(_key, _simulated_services(kafka_rows)), key=str)
    only_kafka = [k for k in kafka_keys if k not in embedded_keys]
    only_embedded = [k for k in embedded_keys if k not in kafka_keys]
    assert not only_kafka and not only_embedded, f"only on Kafka: {only_kafka}\nonly embedded: {only_embedded}"
    # the operator's query over Elasticsearch shows the same incidents
    history = {r["fingerprint"] for r in ElasticHistory(es, namespace).incidents(limit=1000)}
    assert {k[0] for k in kafka_keys} <= history

    # and both caught every injected incident, with no false incident
    for name, findings in (("embedded", embedded_findings), ("kafka", kafka_findings)):
        result = score(findings, truth)
        assert not result.missed, (name, [o for o in result.outcomes if not o.caught])
        false = [f for f in result.false_incidents if not f.service or not f.service.name.startswith("paywatch-")]
        assert false == [], (name, [(f.timestamp, f.finding.fingerprint, f.finding.summary) for f in false])
    kinds = {k[1] for k in embedded_keys}
    assert {"paid_but_pending_incident", "channel_health", "duplicate_charge_incident", "service_down"} <= kinds
    assert "paid_but_pending_incident:merchant:m-food-quickbite" in {k[0] for k in kafka_keys}
    assert "channel_health:bank_a" in {k[0] for k in kafka_keys}  # the quiet channel's outage
    print(f"backends compared: {len(embedded_keys)} incidents, {len(events)} events, {time.monotonic() - began:.0f} s")
