"""Every dashboard panel, run against real Elasticsearch loaded with a simulated incident.

The incident (30 minutes of traffic on three channels): alipay's callbacks stop reaching the
platform for ten minutes, customers re-pay on wechatpay (duplicate charges), compensating
queries find the stuck orders paid and repair them; bank_b fails most attempts for a few
minutes and recovers; the compensation job dies. Documents follow the contracts (events,
findings from `make_finding`, alert documents from the alerts stage) and go through the
collector's real index templates. A panel that would show "No data" fails the test.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from paywatch.alerts.document import alert_document
from paywatch.alerts.model import Alert, AlertChange, Delivery
from paywatch.collectors.collector import routes
from paywatch.collectors.templates import install_templates
from paywatch.compensation.audit import action_doc
from paywatch.contract import ContractError, Event, EventMeta, Heartbeat, Payment, Service, ServiceInstance
from paywatch.dashboards import check, grafana, kibana
from paywatch.dashboards import queries as q
from paywatch.elastic import data_stream
from paywatch.finding import Evidence, FindingPayment, FindingService, make_finding
from paywatch.settings import Topics

pytestmark = pytest.mark.elasticsearch

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
END = T0 + timedelta(minutes=30)
CHANNELS = ("alipay", "wechatpay", "bank_b")
MERCHANTS = ("m-food", "m-travel")
OUTAGE = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))  # alipay callbacks lost
BANK_DOWN = (T0 + timedelta(minutes=5), T0 + timedelta(minutes=12))
COMPENSATOR_DIES = T0 + timedelta(minutes=22)


def _id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def _event(at: datetime, action: str, service: str, **payment: Any) -> dict[str, Any]:
    event = Event(
        timestamp=at,
        event=EventMeta(
            id=_id(action, at, *payment.values()),
            dataset="paywatch.payment",
            action=action,
            outcome=payment.pop("outcome", None),
        ),
        service=Service(name=service, instance=ServiceInstance(id=f"{service}-1")),
        payment=Payment(**payment),
    )
    return msgspec.to_builtins(event)


def _finding(**kwargs: Any) -> dict[str, Any]:
    return msgspec.to_builtins(make_finding(**kwargs))


def _action(at: datetime, kind: str, outcome: str, order: str, attempt: str, channel: str, **kw: Any) -> dict:
    """Compensation audit documents, built by the compensation stage's own `action_doc`."""
    return action_doc(
        at=at,
        type=kind,  # type: ignore[arg-type]
        channel=channel,
        order_id=order,
        attempt_id=attempt,
        actor="paywatch-compensator",
        dry_run=False,
        rule=kind,
        reason=f"{kind} for {order}",
        id_parts=(order, attempt, at.isoformat()),
        outcome=outcome,
        **kw,
    )


def _payments() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    at, n = T0, 0
    while at < END:
        channel, merchant = CHANNELS[n % 3], MERCHANTS[n % 2]
        order = f"ord-{n:04d}"
        base = {"order_id": order, "channel": channel, "merchant_id": merchant, "method": "wallet"}
        events.append(_event(at, "order_created", "order-service", order_id=order, merchant_id=merchant))
        sent = at + timedelta(seconds=1)
        latency = 80 + (n * 37) % 900
        attempt = dict(base, attempt_id=f"{order}-a1", amount_minor=1500 + n, currency="CNY", latency_ms=latency)
        if channel == "bank_b" and BANK_DOWN[0] <= at < BANK_DOWN[1] and n % 4:
            events.append(
                _event(
                    sent,
                    "payment_requested",
                    "payment-gateway",
                    outcome="failure",
                    **attempt,
                    error_code="BANK_TIMEOUT",
                    error_category="channel",
                )
            )
        elif n % 11 == 0:
            code, category = ("WRONG_PASSWORD", "user") if n % 2 else ("LIMIT_EXCEEDED", "limit")
            events.append(
                _event(
                    sent,
                    "payment_requested",
                    "payment-gateway",
                    outcome="failure",
                    **attempt,
                    error_code=code,
                    error_category=category,
                )
            )
        else:
            events.append(_event(sent, "payment_requested", "payment-gateway", outcome="success", **attempt))
            lost = channel == "alipay" and OUTAGE[0] <= at < OUTAGE[1]
            if not lost:
                events.append(
                    _event(
                        at + timedelta(seconds=3),
                        "channel_callback",
                        "callback-receiver",
                        outcome="success",
                        **base,
                        attempt_id=f"{order}-a1",
                        status="success",
                    )
                )
                events.append(
                    _event(
                        at + timedelta(seconds=4),
                        "order_paid",
                        "order-service",
                        order_id=order,
                        merchant_id=merchant,
                        status="success",
                    )
                )
            else:
                findings += _stuck(at, order, base, events, actions)
        at += timedelta(seconds=10)
        n += 1
    return events, findings, actions


def _stuck(at: datetime, order: str, base: dict[str, Any], events: list, actions: list) -> list[dict[str, Any]]:
    """An alipay order charged while callbacks are lost: stuck, half the customers re-pay on
    wechatpay, a compensating query finds it paid and a repair records it."""
    stuck_at = at + timedelta(minutes=2)
    pay = FindingPayment(order_id=order, attempt_id=f"{order}-a1", channel="alipay", merchant_id=base["merchant_id"])
    out = [
        _finding(
            at=stuck_at,
            kind="paid_but_pending",
            state="open",
            fingerprint=f"paid_but_pending:{order}",
            severity="warning",
            summary=f"order {order} stuck",
            payment=pay,
            evidence=Evidence(figures={"paid_grace_s": 120.0}),
        )
    ]
    if int(order[-4:]) % 4 != 1:  # most customers see "unpaid" and pay again
        second = dict(base, channel="wechatpay", attempt_id=f"{order}-a2")
        events.append(
            _event(
                at + timedelta(seconds=60),
                "payment_requested",
                "payment-gateway",
                outcome="success",
                **second,
                amount_minor=1500,
                currency="CNY",
                latency_ms=300,
            )
        )
        dup = FindingPayment(
            order_id=order, attempt_id=f"{order}-a2", channel="wechatpay", merchant_id=base["merchant_id"]
        )
        out.append(
            _finding(
                at=at + timedelta(seconds=65),
                kind="duplicate_charge",
                state="open",
                fingerprint=f"duplicate_charge:{order}",
                severity="warning",
                summary=f"order {order} charged twice",
                payment=dup,
                evidence=Evidence(figures={"charges": 2, "refunded": 0}),
            )
        )
        actions.append(
            _action(
                at + timedelta(minutes=4),
                "refund_candidate",
                "success",
                order,
                f"{order}-a2",
                "wechatpay",
                from_status="paid",
                to_status="refund_candidate",
            )
        )
    queried = at + timedelta(minutes=3)
    if queried < COMPENSATOR_DIES:  # the job answers until it dies; later orders stay stuck
        events.append(
            _event(
                queried,
                "channel_query_result",
                "compensation-job",
                outcome="success",
                **base,
                attempt_id=f"{order}-a1",
                status="success",
                latency_ms=450,
            )
        )
        actions.append(_action(queried, "query", "success", order, f"{order}-a1", "alipay"))
        actions.append(
            _action(
                queried + timedelta(seconds=1),
                "repair",
                "success",
                order,
                f"{order}-a1",
                "alipay",
                from_status="pending",
                to_status="paid",
            )
        )
        out.append(
            _finding(
                at=queried + timedelta(seconds=2),
                kind="paid_but_pending",
                state="resolved",
                fingerprint=f"paid_but_pending:{order}",
                severity="warning",
                summary=f"order {order} recorded as paid",
                payment=pay,
            )
        )
    return out


def _channel_findings() -> list[dict[str, Any]]:
    def health(at: datetime, channel: str, level: str) -> dict[str, Any]:
        # The detector's figures: the window's failure rate (customer failures excluded) and the baseline.
        rate = {"healthy": 0.02, "degraded": 0.45, "down": 0.75}[level]
        return _finding(
            at=at,
            kind="channel_health",
            state="resolved" if level == "healthy" else "open",
            level=level,
            fingerprint=f"channel_health:{channel}",
            severity="info",
            summary=f"{channel} {level}",
            payment=FindingPayment(channel=channel),
            evidence=Evidence(figures={"failure_rate": rate, "baseline": 0.02, "finished": 40}),
        )

    out = [health(T0 + timedelta(seconds=30), c, "healthy") for c in CHANNELS]
    out += [
        health(BANK_DOWN[0] + timedelta(seconds=60), "bank_b", "degraded"),
        health(BANK_DOWN[0] + timedelta(seconds=150), "bank_b", "down"),
        health(BANK_DOWN[1] + timedelta(seconds=90), "bank_b", "healthy"),
    ]
    for state, at in (("open", OUTAGE[0] + timedelta(minutes=3)), ("resolved", OUTAGE[1] + timedelta(minutes=4))):
        out.append(
            _finding(
                at=at,
                kind="paid_but_pending_incident",
                state=state,
                fingerprint="paid_but_pending_incident:alipay",
                severity="critical",
                summary="orders paid but pending on alipay",
                payment=FindingPayment(channel="alipay"),
                evidence=Evidence(figures={"orders": 14, "span_s": 120}),
            )
        )
    out.append(
        _finding(
            at=COMPENSATOR_DIES + timedelta(seconds=30),
            kind="heartbeat_missing",
            state="open",
            fingerprint="heartbeat_missing:compensation-job",
            severity="critical",
            summary="compensation-job silent",
            service=FindingService(name="compensation-job"),
        )
    )
    return out


def _heartbeats() -> list[dict[str, Any]]:
    services = {
        ("order-service", "order-service-1"): END,
        ("order-service", "order-service-2"): END,
        ("payment-gateway", "payment-gateway-1"): END,
        ("callback-receiver", "callback-receiver-1"): END,
        ("compensation-job", "compensation-job-1"): COMPENSATOR_DIES,
    }
    out = []
    for (name, instance), until in services.items():
        at, seq = T0, 0
        while at < until:
            degraded = name == "callback-receiver" and OUTAGE[0] <= at < OUTAGE[1]
            event = Event(
                timestamp=at,
                event=EventMeta(id=_id(instance, seq), dataset="paywatch.heartbeat"),
                service=Service(name=name, instance=ServiceInstance(id=instance)),
                heartbeat=Heartbeat(interval_s=10, seq=seq, status="degraded" if degraded else "up"),
            )
            out.append(msgspec.to_builtins(event))
            at, seq = at + timedelta(seconds=10), seq + 1
    return out


def _alerts() -> list[dict[str, Any]]:
    labels = {"alertname": "PaidButPending", "channel": "alipay", "severity": "critical"}
    fired_at = OUTAGE[0] + timedelta(minutes=3)
    alert = Alert(
        labels=labels, annotations={"summary": "orders paid but pending"}, starts_at=fired_at, status="firing"
    )
    fired = AlertChange(alert=alert, at=fired_at, page=True, reason="fired")
    resolved_at = OUTAGE[1] + timedelta(minutes=4)
    done = Alert(
        labels=labels, annotations=alert.annotations, starts_at=fired_at, status="resolved", ends_at=resolved_at
    )
    deliveries = (
        Delivery(sink="alertmanager", fingerprints=(alert.fingerprint,), ok=True, attempts=1, status_code=200),
        Delivery(sink="slack", fingerprints=(alert.fingerprint,), ok=False, attempts=3, error="timeout"),
    )
    return [
        alert_document(fired, deliveries),
        alert_document(AlertChange(alert=done, at=resolved_at, page=True, reason="resolved"), deliveries[:1]),
    ]


def incident_documents() -> dict[str, list[dict[str, Any]]]:
    payments, findings, actions = _payments()
    return {
        q.PAYMENT: payments,
        q.FINDING: findings + _channel_findings(),
        q.ACTION: actions,
        q.HEARTBEAT: _heartbeats(),
        q.ALERT: _alerts(),
    }


def _stored(
    dataset: str, docs: list[dict[str, Any]], namespace: str, dead: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Each document as the collector stores it (validated, masked, stamped with event.ingested);
    what the contract refuses goes to `dead`, as the collector would dead-letter it."""
    route = next(r for r in routes(Topics(), namespace, 64 * 1024).values() if r.dataset == dataset)
    for doc in docs:
        at = datetime.fromisoformat(doc["@timestamp"]) if isinstance(doc["@timestamp"], str) else doc["@timestamp"]
        try:
            doc_id, body = route.prepare(json.dumps(doc, default=str).encode(), at + timedelta(seconds=2))
        except ContractError as exc:
            if dead is None:
                raise
            dead.append(f"{doc['event'].get('action')}: {exc}")
            continue
        yield {"_op_type": "create", "_index": data_stream(dataset, namespace), "_id": doc_id, "_source": body}


@pytest.fixture(scope="module")
def incident(es: Any) -> Iterator[str]:
    """Load the incident into fresh data streams of a namespace of its own; yield the namespace."""
    from elasticsearch.helpers import bulk

    namespace = "dash" + uuid.uuid4().hex[:8]
    install_templates(es)
    actions = [a for dataset, docs in incident_documents().items() for a in _stored(dataset, docs, namespace)]
    _ok, errors = bulk(es, actions, raise_on_error=False, refresh="wait_for")
    assert not errors, errors[:3]
    yield namespace
    es.indices.delete_data_stream(name=f"logs-paywatch.*-{namespace}")


ALL_VARS = {"channel": check.ALL, "merchant": check.ALL}


def _results(es: Any, namespace: str, variables: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Panel title → rows Grafana would plot, for every Elasticsearch panel of every dashboard,
    with the environment's data source (its index pattern) picked."""
    dashboards = grafana.build_all(environments=(namespace,)).values()
    found = check.panel_rows(es, grafana.datasource_index(namespace), dashboards, T0, END, variables)
    return {panel: rows for (_, panel), rows in found.items()}


@pytest.fixture(scope="module")
def all_rows(es: Any, incident: str) -> dict[str, list[dict[str, Any]]]:
    return _results(es, incident, ALL_VARS)


def _panel(key: str) -> q.Panel:
    return next(p for d in q.DASHBOARDS for p in d.es_panels if p.key == key)


@pytest.mark.parametrize("key", [p.key for d in q.DASHBOARDS for p in d.es_panels])
def test_every_panel_shows_data_on_the_incident(all_rows: dict[str, list[dict[str, Any]]], key: str) -> None:
    assert all_rows[_panel(key).title], f"panel {_panel(key).title!r} would show 'No data' on the incident"


def _latest(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Newest document per key, as the panel's groupBy transformation shows it (rows come newest first)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row[key], row)
    return out


def test_panels_answer_their_questions(all_rows: dict[str, list[dict[str, Any]]]) -> None:
    def rows(key: str) -> list[dict[str, Any]]:
        return all_rows[_panel(key).title]

    # Stuck orders: alipay only; orders charged after the compensation job died are still open.
    stuck = _latest(rows("stuck_open"), "payment.order_id")
    assert {r["payment.channel"] for r in stuck.values()} == {"alipay"}
    assert {r["finding.state"] for r in stuck.values()} == {"open", "resolved"}
    assert {r["payment.channel"] for r in rows("stuck_count")} == {"alipay"}
    assert sum(r["1"] for r in rows("stuck_since")) == len(stuck)
    assert {r["finding.state"] for r in rows("stuck_incidents")} == {"open", "resolved"}
    assert {r["event.outcome"] for r in rows("compensating_queries")} == {"success"}
    assert {(r["action.from_status"], r["action.to_status"]) for r in rows("repairs")} == {("pending", "paid")}
    repaired = {r["payment.order_id"] for r in rows("repairs")}
    assert repaired == {o for o, r in stuck.items() if r["finding.state"] == "resolved"}
    # Channel state: bank_b went degraded, down, and back to healthy; the others stayed healthy.
    levels: dict[str, list[str]] = {}
    for r in reversed(rows("channel_state")):  # oldest first
        levels.setdefault(r["payment.channel"], []).append(r["finding.level"])
    assert levels["bank_b"] == ["healthy", "degraded", "down", "healthy"]
    assert levels["alipay"] == levels["wechatpay"] == ["healthy"]
    peaks: dict[str, float] = {}
    for r in rows("channel_failure_rate"):
        peaks[r["payment.channel"]] = max(peaks.get(r["payment.channel"], 0.0), r["1"])
        assert r["2"] == pytest.approx(0.02)  # the baseline rides along (figures are stored as floats)
    assert peaks == pytest.approx({"alipay": 0.02, "wechatpay": 0.02, "bank_b": 0.75})
    assert {r["payment.channel"] for r in rows("channel_failures")} == {"bank_b"}
    # Failures split into both sides; the channel side is bank_b's timeouts.
    assert {r["filters"] for r in rows("failure_side") if r["1"] > 0} == {"customer", "channel"}
    codes = {r["payment.error_code"] for r in rows("top_error_codes")}
    assert codes == {"BANK_TIMEOUT", "WRONG_PASSWORD", "LIMIT_EXCEEDED"}
    assert {r["event.outcome"] for r in rows("outcomes")} == {"success", "failure"}
    assert {r["payment.channel"] for r in rows("attempts")} == set(CHANNELS)
    assert all(set(r["1"]) == {"50.0", "95.0", "99.0"} for r in rows("latency"))
    # Duplicates land on the channel of the second charge, for both merchants' customers.
    assert {r["payment.channel"] for r in rows("duplicates_by_channel")} == {"wechatpay"}
    assert {r["payment.merchant_id"] for r in rows("duplicates_by_merchant")} == set(MERCHANTS)
    assert {r["payment.channel"] for r in rows("refund_candidates")} == {"wechatpay"}
    # Heartbeats: five instances; the compensation job's last beat is just before it died.
    grid = {(r["service.name"], r["service.instance.id"]): r for r in rows("heartbeat_grid")}
    assert len(grid) == 5
    last_seen = grid[("compensation-job", "compensation-job-1")]["1"]
    assert COMPENSATOR_DIES.timestamp() * 1000 - 10_000 <= last_seen < COMPENSATOR_DIES.timestamp() * 1000
    assert {r["service.name"] for r in rows("heartbeats_received")} == {s for s, _ in grid}
    assert {r["heartbeat.status"] for r in rows("heartbeat_status")} == {"up", "degraded"}
    assert set(_latest(rows("silent_services"), "service.name")) == {"compensation-job"}
    # paywatch's own health.
    assert {r["event.dataset"] for r in rows("collector_throughput")} == set(incident_documents())
    assert {"paid_but_pending", "channel_health"} <= {r["finding.kind"] for r in rows("detector_output")}
    assert {r["alert.status"] for r in rows("alert_changes")} == {"firing", "resolved"}
    # Two alert documents: fired (alertmanager delivered, slack failed), resolved (alertmanager
    # delivered). Counted per delivery, never pairing one delivery's sink with another's outcome.
    deliveries = {r["alert.delivery_results"]: r["1"] for r in rows("alert_deliveries")}
    assert deliveries == {"alertmanager: delivered": 2, "slack: failed": 1}


def test_template_variables_filter_the_panels(es: Any, incident: str) -> None:
    """Picking one channel and merchant narrows every panel that names them to exactly those."""
    picked = _results(es, incident, {"channel": ["alipay"], "merchant": ["m-food"]})
    checked = 0
    for d in q.DASHBOARDS:
        for panel in d.es_panels:
            for row in picked[panel.title]:
                if "payment.channel" in row and "channel" in panel.variables:
                    assert row["payment.channel"] == "alipay", panel.title
                    checked += 1
                if "payment.merchant_id" in row and "merchant" in panel.variables:
                    assert row["payment.merchant_id"] == "m-food", panel.title
                    checked += 1
    assert checked > 0
    assert picked[_panel("stuck_open").title], "alipay's stuck orders vanish when alipay is picked"
    # Another environment (namespace) holds none of the incident.
    other = _results(es, "nosuchenv", ALL_VARS)
    assert not any(other.values())


def test_kibana_saved_searches_run(es: Any, incident: str) -> None:
    """Every saved search's Lucene query, on its data view's pattern, finds incident documents."""
    objects = {o["id"]: o for o in kibana.saved_objects()}
    searches = [o for o in objects.values() if o["type"] == "search"]
    assert searches
    for search in searches:
        source = kibana.search_source(search)
        (ref,) = search["references"]
        view = objects[ref["id"]]["attributes"]
        body = {
            "size": 1,
            "query": {
                "bool": {
                    "filter": [
                        {"range": {"@timestamp": {"gte": T0.isoformat(), "lte": END.isoformat()}}},
                        {"query_string": {"query": source["query"]["query"], "analyze_wildcard": True}},
                    ]
                }
            },
        }
        index = view["title"].removesuffix("*") + incident  # the incident's namespace only
        hits = es.search(index=index, **body)["hits"]["total"]["value"]
        assert hits > 0, search["attributes"]["title"]


# --- the demo incident from the simulator, judged by the real detectors and alert rules ---------

DEMO = ("callback_outage:start=2m,duration=4m", "channel_down:start=3m,duration=90s", "service_dies:start=7m")


def demo_documents() -> tuple[dict[str, list[dict[str, Any]]], datetime, datetime]:
    """Simulator traffic (payments, heartbeats) → DetectionEngine findings → AlertEngine documents."""
    from paywatch.alerts.runner import build_engine
    from paywatch.alerts.settings import AlertSettings
    from paywatch.detectors.engine import DetectionEngine
    from paywatch.detectors.replay import replay_events
    from paywatch.detectors.settings import DetectorSettings
    from paywatch.kibana import KibanaSettings
    from paywatch.simulator.scenarios import simulate
    from paywatch.simulator.settings import SimulatorSettings

    run = simulate(DEMO, seed=7, duration="10m", telemetry="direct", settings=SimulatorSettings(peak_orders_per_s=2))
    events = list(run)
    findings = list(replay_events(events, DetectionEngine(DetectorSettings()), drain_s=120))
    alerts = build_engine(AlertSettings(), KibanaSettings().url)
    changes = [c for f in findings for c in alerts.on_finding(f)]
    docs: dict[str, list[dict[str, Any]]] = {q.PAYMENT: [], q.HEARTBEAT: []}
    for event in events:
        docs[event.event.dataset].append(msgspec.to_builtins(event))
    docs[q.FINDING] = [msgspec.to_builtins(f) for f in findings]
    docs[q.ALERT] = [alert_document(c) for c in changes]
    return docs, events[0].timestamp, events[-1].timestamp + timedelta(minutes=3)


@pytest.mark.slow
def test_every_panel_shows_data_on_the_simulated_demo(es: Any) -> None:
    """The demo's incident, as the simulator makes it and the real detectors and alert rules judge
    it. Compensation audit documents are not produced on this path (no compensation stage runs
    here) and alert deliveries (no sink runs); those panels are proven above, on the compensation
    stage's own `action_doc` and the alerts stage's own `alert_document` with deliveries."""
    from elasticsearch.helpers import bulk

    docs, start, end = demo_documents()
    namespace = "demo" + uuid.uuid4().hex[:8]
    install_templates(es)
    dead: list[str] = []
    actions = (a for dataset, items in docs.items() for a in _stored(dataset, items, namespace, dead))
    _ok, errors = bulk(es, actions, raise_on_error=False, refresh="wait_for", chunk_size=2000)
    assert not errors, errors[:3]
    try:
        dashboards = grafana.build_all(environments=(namespace,)).values()
        found = check.panel_rows(es, grafana.datasource_index(namespace), dashboards, start, end, ALL_VARS)
    finally:
        es.indices.delete_data_stream(name=f"logs-paywatch.*-{namespace}")
    # Not produced on this path: compensation audit documents, and alert deliveries (no sink runs).
    elsewhere = {p.title for d in q.DASHBOARDS for p in d.es_panels if p.dataset == q.ACTION}
    elsewhere.add(_panel("alert_deliveries").title)
    rows = {panel: r for (_, panel), r in found.items()}
    assert "alipay" in {r["payment.channel"] for r in rows[_panel("stuck_count").title]}
    assert "degraded" in {r["finding.level"] for r in rows[_panel("channel_state").title]}
    assert "compensation-job" in {r["service.name"] for r in rows[_panel("silent_services").title]}
    problems = [f"no data: {panel}" for panel, r in sorted(rows.items()) if not r and panel not in elsewhere]
    # Events the contract refuses are dead-lettered by the collector and never reach a panel.
    problems += [f"{n} dead letters, e.g. {sorted(set(dead))[:2]}" for n in [len(dead)] if n]
    assert problems == [], "the demo incident does not fill every panel"


def test_check_command_reports_empty_panels(es_url: str, incident: str, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from paywatch.app.dashboards import dashboards as dashboards_cli

    config = tmp_path / "paywatch.yaml"
    config.write_text(f"elasticsearch:\n  url: {es_url}\n")
    since = f"{(datetime.now(UTC) - T0).days + 1}d"
    args = ["check", "--since", since, "--environment", incident, "--config", str(config)]
    ok = CliRunner().invoke(dashboards_cli, args)
    assert ok.exit_code == 0, ok.output
    assert "NO DATA" not in ok.output and ok.output.count("ok ") == len([p for d in q.DASHBOARDS for p in d.es_panels])
    narrowed = CliRunner().invoke(dashboards_cli, [*args, "--channel", "no-such-channel"])
    assert narrowed.exit_code == 1
    status = {line.rsplit(" / ", 1)[1]: line.split()[0] for line in narrowed.output.splitlines()}
    assert status[_panel("attempts").title] == "NO"  # the channel filter applies...
    assert status[_panel("heartbeats_received").title] == "ok"  # ...only where documents name a channel


def test_every_column_a_table_declares_is_in_its_documents(all_rows: dict[str, list[dict[str, Any]]]) -> None:
    """A misspelt column would be an empty column in Grafana and Kibana alike."""
    for d in q.DASHBOARDS:
        for panel in d.es_panels:
            present = {name for row in all_rows[panel.title] for name in row}
            assert set(panel.columns) <= present, (panel.title, set(panel.columns) - present)


def test_kibana_fields_exist_in_the_mappings(es: Any, incident: str) -> None:
    """Every field a Lens column or a saved search column names is mapped in its data view's indices."""
    objects = {(o["type"], o["id"]): o for o in kibana.saved_objects()}
    for (kind, _), obj in objects.items():
        if kind not in ("lens", "search"):
            continue
        (ref,) = obj["references"]
        pattern = objects["index-pattern", ref["id"]]["attributes"]["title"].removesuffix("*") + incident
        mapped = set(es.field_caps(index=pattern, fields="*")["fields"])
        if kind == "lens":
            layer = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"][kibana.LAYER]
            fields = {c["sourceField"] for c in layer["columns"].values() if c.get("sourceField")}
            fields |= {f for c in layer["columns"].values() for f in c.get("params", {}).get("secondaryFields", [])}
            fields.discard("___records___")
        else:
            fields = set(obj["attributes"]["columns"])
        assert fields <= mapped, (obj["attributes"]["title"], fields - mapped)
