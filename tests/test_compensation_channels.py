"""Compensating queries against local fake channel servers that speak the documented WeChat
Pay v3, Alipay and Stripe shapes (simulator/channel_api.py), through the real adapters,
request signing, budgets and executor."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import structlog

from paywatch.compensation.adapters import build_adapters
from paywatch.compensation.channels import QueryRequest
from paywatch.compensation.engine import Compensator, Effects
from paywatch.compensation.executor import Executor, OrderWebhook, run_due
from paywatch.compensation.generic import GenericAdapter
from paywatch.compensation.settings import (
    BudgetSettings,
    ChannelQuerySettings,
    CompensationSettings,
    GenericSettings,
    OrderWebhookSettings,
    ScheduleSettings,
)
from paywatch.contract import encode
from paywatch.finding import AttemptEvidence, Evidence, FindingPayment, encode_finding, make_finding
from paywatch.simulator.channel_api import ChannelApiServer, merchant_keypair
from paywatch.simulator.truth import ChannelRecord
from paywatch.webhooks import verify

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
STRIPE_KEY = "sk_test_51PaywatchSecretDoNotLog"
PROVIDERS = ("wechatpay", "alipay", "stripe")
# The fake platforms' own signing key; secrets_env hands its public half to the client.
PLATFORM = merchant_keypair()


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return merchant_keypair()


@pytest.fixture
def secrets_env(monkeypatch, keypair):
    monkeypatch.setenv("PAYWATCH_WECHATPAY_PRIVATE_KEY", keypair[0])
    monkeypatch.setenv("PAYWATCH_ALIPAY_PRIVATE_KEY", keypair[0])
    monkeypatch.setenv("PAYWATCH_STRIPE_SECRET_KEY", STRIPE_KEY)
    monkeypatch.setenv("PAYWATCH_WECHATPAY_PLATFORM_KEY", PLATFORM[1])
    monkeypatch.setenv("PAYWATCH_ALIPAY_PUBLIC_KEY", PLATFORM[1])
    return keypair


class Truth(dict):
    """attempt id → ChannelRecord: what the channel itself knows."""

    def add(self, attempt_id: str, status: str, channel: str = "x", order_id: str = "o") -> None:
        self[attempt_id] = ChannelRecord(
            channel=channel,
            order_id=order_id,
            attempt_id=attempt_id,
            amount_minor=8888,
            currency="CNY",
            created_at=T0,
            status=status,  # type: ignore[arg-type]
            paid_at=T0 + timedelta(seconds=3) if status == "paid" else None,
        )


def fake(provider: str, truth: Truth, keypair: tuple[str, str], **kw) -> ChannelApiServer:
    auth = {"secret_key": STRIPE_KEY} if provider == "stripe" else {"public_key": keypair[1]}
    return ChannelApiServer(provider, truth.get, **auth, platform_key=PLATFORM, **kw).start()  # type: ignore[arg-type]


def comp_settings(servers: dict[str, ChannelApiServer], channel_kw: dict | None = None, **kw) -> CompensationSettings:
    channels = {
        name: ChannelQuerySettings(
            adapter=name,  # type: ignore[arg-type]
            base_url=s.url,
            wechatpay={
                "mchid": "1230000109",
                "serial_no": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                "platform_serial": s.platform_serial,
            },
            alipay={"app_id": "2014072300007148"},
            **(channel_kw or {}),
        )
        for name, s in servers.items()
    }
    return CompensationSettings(channels=channels, **kw)


def finding(kind: str, order: str, attempt: str, channel: str, attempts=()):
    return make_finding(
        at=T0,
        kind=kind,  # type: ignore[arg-type]
        state="open",
        fingerprint=f"{kind}:{order}",
        severity="warning",
        summary="test",
        evidence=Evidence(attempts=[AttemptEvidence(attempt_id=a, channel=c, event_id="e") for c, a in attempts]),
        payment=FindingPayment(order_id=order, attempt_id=attempt, channel=channel),
    )


async def run(settings: CompensationSettings, findings, times=(T0,), **executor_kw) -> tuple[Effects, Executor]:
    comp = Compensator(settings)
    executor = Executor(build_adapters(settings), settings, **executor_kw)
    effects = Effects()
    try:
        for f in findings:
            effects += comp.on_finding(f)
        for now in times:
            effects += await run_due(comp, executor, now)
    finally:
        await executor.aclose()
    return effects, executor


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stuck_orders_are_resolved_by_signed_queries(provider, secrets_env):
    truth = Truth()
    truth.add("paid-1", "paid")
    truth.add("closed-1", "closed")
    truth.add("pending-1", "pending")
    server = fake(provider, truth, secrets_env)
    try:
        effects, _ = asyncio.run(
            run(
                comp_settings({provider: server}),
                [
                    finding("paid_but_pending", "o1", "paid-1", provider, [(provider, "paid-1")]),
                    finding("unknown_attempt", "o2", "closed-1", provider),
                    finding("unknown_attempt", "o3", "pending-1", provider),
                ],
            )
        )
    finally:
        server.stop()
    assert server.count() == 3 and {r.status for r in server.requests} <= {200, 404}  # signatures verified
    outcomes = {e.payment.attempt_id: (e.event.outcome, e.payment.status) for e in effects.events}
    expected = {
        "wechatpay": {"paid-1": "SUCCESS", "closed-1": "CLOSED", "pending-1": "NOTPAY"},
        "alipay": {"paid-1": "TRADE_SUCCESS", "closed-1": "TRADE_CLOSED", "pending-1": "WAIT_BUYER_PAY"},
        "stripe": {"paid-1": "succeeded", "closed-1": "canceled", "pending-1": "requires_payment_method"},
    }[provider]
    assert outcomes == {
        "paid-1": ("success", expected["paid-1"]),
        "closed-1": ("failure", expected["closed-1"]),
        "pending-1": ("unknown", expected["pending-1"]),
    }
    (repair,) = [a for a in effects.actions if a["action"]["type"] == "repair"]
    assert repair["payment"]["order_id"] == "o1" and repair["action"]["to_status"] == "paid"
    queries = [a for a in effects.actions if a["action"]["type"] == "query"]
    assert len(queries) == 3 and all(q["query"]["latency_ms"] >= 0 for q in queries)
    assert all(q["query"]["response_body"] for q in queries)  # the raw answer is in the audit


def test_bad_request_signature_is_refused_by_the_fake_and_named_a_credentials_fault(secrets_env, monkeypatch):
    monkeypatch.setenv("PAYWATCH_WECHATPAY_PRIVATE_KEY", merchant_keypair()[0])  # not the key the fake knows
    truth = Truth()
    truth.add("paid-1", "paid")
    server = fake("wechatpay", truth, secrets_env)
    try:
        effects, _ = asyncio.run(
            run(comp_settings({"wechatpay": server}), [finding("unknown_attempt", "o1", "paid-1", "wechatpay")])
        )
    finally:
        server.stop()
    assert [r.status for r in server.requests] == [401]
    assert effects.events == []
    query = effects.actions[0]["query"]
    assert query["credentials"] == "SIGN_ERROR" and query["api_failed"] is False
    assert [f.finding.kind for f in effects.findings] == ["channel_credentials"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_not_found_then_success(provider, secrets_env):
    truth = Truth()
    truth.add("late-1", "paid")
    server = fake(provider, truth, secrets_env, not_found_first=1)
    later = T0 + timedelta(minutes=10)
    try:
        effects, _ = asyncio.run(
            run(
                comp_settings({provider: server}),
                [finding("paid_but_pending", "o1", "late-1", provider, [(provider, "late-1")])],
                times=(T0, later),
            )
        )
    finally:
        server.stop()
    assert [(e.event.outcome, e.payment.error_code) for e in effects.events] == [
        ("unknown", "not_found"),
        ("success", None),
    ]
    assert [a["action"]["type"] for a in effects.actions] == ["query", "query", "repair"]


class VirtualTime:
    """A clock that moves only when the limiter waits: the burst runs as fast as the machine
    allows, yet the server sees exactly the timing the budget produced."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


@pytest.mark.slow
def test_rate_limit_holds_under_a_burst_of_10000_stuck_orders(secrets_env):
    qps, n = 200, 10_000
    truth = Truth()
    for i in range(n):
        truth.add(f"pi_{i}", "paid" if i % 3 else "pending")
    vt = VirtualTime()
    server = ChannelApiServer("stripe", truth.get, secret_key=STRIPE_KEY, clock=vt.monotonic)  # in-process
    settings = comp_settings({"stripe": server}, budget=BudgetSettings(qps=qps, concurrency=32))
    findings = [finding("unknown_attempt", f"o{i}", f"pi_{i}", "stripe") for i in range(n)]

    async def burst():
        async with httpx.AsyncClient(transport=server.transport()) as client:
            return await run(settings, findings, client=client, monotonic=vt.monotonic, sleep=vt.sleep)

    effects, _ = asyncio.run(burst())
    server.stop()
    assert server.count() == n
    assert sum(e.event.outcome == "success" for e in effects.events) == sum(1 for i in range(n) if i % 3)
    times = [r.at for r in server.requests]
    assert max(times) - min(times) >= (n - 1) / qps  # the burst became a queue
    assert server.max_in_window(1.0) <= qps


def test_circuit_opens_on_failing_query_api_and_closes_after_a_successful_probe(secrets_env):
    truth = Truth()
    for i in range(8):
        truth.add(f"pi_{i}", "paid")
    server = fake("stripe", truth, secrets_env)
    server.fail_next(3, "error")
    budget = BudgetSettings(qps=200, concurrency=1, breaker_failures=3, breaker_open_s=0.5)
    settings = comp_settings({"stripe": server}, budget=budget)
    findings = [finding("unknown_attempt", f"o{i}", f"pi_{i}", "stripe") for i in range(8)]
    with structlog.testing.capture_logs() as logs:
        effects, executor = asyncio.run(run(settings, findings))
    server.stop()
    statuses = [r.status for r in server.requests]
    assert statuses == [500, 500, 500, 200, 200, 200, 200, 200]
    times = [r.at for r in server.requests]
    assert times[3] - times[2] >= 0.5  # nothing reached the channel while the circuit was open
    assert [entry["event"] for entry in logs if entry["event"].startswith("circuit_")] == [
        "circuit_open",
        "circuit_closed",
    ]
    assert executor.circuit("stripe") == "closed"
    assert sum(e.event.outcome == "success" for e in effects.events) == 5


def test_failed_probe_keeps_the_circuit_open_longer(secrets_env):
    truth = Truth()
    for i in range(5):
        truth.add(f"pi_{i}", "paid")
    server = fake("stripe", truth, secrets_env)
    server.fail_next(3, "unavailable")
    budget = BudgetSettings(qps=200, concurrency=1, breaker_failures=2, breaker_open_s=0.3)
    findings = [finding("unknown_attempt", f"o{i}", f"pi_{i}", "stripe") for i in range(5)]
    asyncio.run(run(comp_settings({"stripe": server}, budget=budget), findings))
    server.stop()
    assert [r.status for r in server.requests] == [503, 503, 503, 200, 200]
    t = [r.at for r in server.requests]
    assert t[2] - t[1] >= 0.3 and t[3] - t[2] >= 0.6  # the failed probe doubled the wait


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_honoured(provider, secrets_env):
    truth = Truth()
    truth.add("a-1", "paid")
    truth.add("a-2", "paid")
    server = fake(provider, truth, secrets_env)
    server.fail_next(1, "throttle", retry_after_s=1)
    findings = [finding("unknown_attempt", f"o{i}", f"a-{i}", provider) for i in (1, 2)]
    settings = comp_settings({provider: server}, budget=BudgetSettings(qps=100, concurrency=1))
    effects, _ = asyncio.run(run(settings, findings))
    server.stop()
    assert [r.status for r in server.requests] == [429, 200]
    assert server.requests[1].at - server.requests[0].at >= 1.0
    throttled = effects.actions[0]["query"]
    assert throttled["throttled"] is True and throttled["retry_after_s"] == 1.0


def test_duplicate_charge_reconfirmed_at_both_channels_before_refund_candidate(secrets_env):
    truth = Truth()
    truth.add("wx-1", "paid")
    truth.add("ali-1", "paid")
    wx, ali = fake("wechatpay", truth, secrets_env), fake("alipay", truth, secrets_env)
    dup = finding("duplicate_charge", "o1", "ali-1", "alipay", [("wechatpay", "wx-1"), ("alipay", "ali-1")])
    try:
        effects, _ = asyncio.run(run(comp_settings({"wechatpay": wx, "alipay": ali}), [dup]))
    finally:
        wx.stop(), ali.stop()
    assert wx.count("wx-1") == 1
    # Alipay: the trade query, and for the refund decision the refund query (a partial refund
    # leaves the trade TRADE_SUCCESS)
    assert [r.params["method"] for r in ali.requests] == ["alipay.trade.query", "alipay.trade.fastpay.refund.query"]
    (cand,) = [a for a in effects.actions if a["action"]["type"] == "refund_candidate"]
    assert cand["payment"]["attempt_id"] == "ali-1" and cand["action"]["evidence"]["keep"] == "wx-1"


class Receiver:
    """The order system's webhook endpoint: records what it is told."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/repair"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_has_no_side_effects(dry_run, secrets_env, monkeypatch):
    monkeypatch.setenv("PAYWATCH_ORDER_WEBHOOK_SECRET", "whsec-order-system")
    truth = Truth()
    truth.add("paid-1", "paid")
    server = fake("alipay", truth, secrets_env)
    receiver = Receiver()
    settings = comp_settings({"alipay": server}, dry_run=dry_run, order_webhook=OrderWebhookSettings(url=receiver.url))

    async def scenario() -> list[bool]:
        effects, _ = await run(
            settings, [finding("paid_but_pending", "o1", "paid-1", "alipay", [("alipay", "paid-1")])]
        )
        webhook = OrderWebhook(settings.order_webhook)
        try:
            return [await webhook.deliver(a) for a in effects.actions]
        finally:
            await webhook.aclose()

    delivered = asyncio.run(scenario())
    server.stop(), receiver.stop()
    assert server.count() == 1  # the query itself runs in dry-run (it changes nothing)
    if dry_run:
        assert receiver.received == [] and delivered == [False, False]
    else:
        assert delivered == [False, True]  # the query record is not for the order system
        ((headers, body),) = receiver.received
        verify("whsec-order-system", body, headers, now=datetime.now(UTC).timestamp())
        action = json.loads(body)
        assert action["action"]["type"] == "repair" and action["payment"]["order_id"] == "o1"


def test_secrets_never_reach_logs_or_audit(secrets_env, capfd, caplog):
    private_pem = secrets_env[0]
    key_body = "".join(private_pem.splitlines()[1:-1])
    truth = Truth()
    truth.add("paid-1", "paid")
    servers = {p: fake(p, truth, secrets_env) for p in PROVIDERS}
    for s in servers.values():
        s.fail_next(1, "error")
    settings = comp_settings(servers, schedule=ScheduleSettings(error_retry_s=1))
    findings = [finding("paid_but_pending", f"o-{p}", "paid-1", p, [(p, "paid-1")]) for p in PROVIDERS]
    with structlog.testing.capture_logs() as logs:
        effects, _ = asyncio.run(run(settings, findings, times=(T0, T0 + timedelta(seconds=5))))
    for s in servers.values():
        s.stop()
    assert len([a for a in effects.actions if a["action"]["type"] == "repair"]) == 3
    out = capfd.readouterr()
    published = (
        json.dumps(effects.actions)
        + "".join(encode(e).decode() for e in effects.events)
        + "".join(encode_finding(f).decode() for f in effects.findings)
    )
    everything = published + out.out + out.err + caplog.text + repr(logs) + repr(settings)
    for secret in (STRIPE_KEY, key_body[:64], key_body[-64:], "signature="):
        assert secret not in everything


def test_generic_adapter_maps_configured_fields():
    mapping = GenericSettings(path="/v2/orders/{attempt_id}", status_field="data.state", success=["PAID"])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        if request.url.path.endswith("/missing"):
            return httpx.Response(404, json={"error": "no such order"})
        return httpx.Response(200, json={"data": {"state": "PAID"}})

    adapter = GenericAdapter("https://bank", 5, mapping, token="tok")
    req = QueryRequest("bank_a", "o1", "a1", 1, ("status",), T0)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            found = await adapter.query(client, req)
            missing = await adapter.query(client, QueryRequest("bank_a", "o1", "missing", 1, ("status",), T0))
        return found, missing

    found, missing = asyncio.run(go())
    assert (found.outcome, found.channel_status) == ("success", "PAID")
    assert missing.not_found and missing.outcome == "unknown" and not missing.api_failed


def test_a_crashing_adapter_is_a_failed_query_not_a_dead_executor():
    class Broken:
        async def query(self, client, request):
            raise RuntimeError("adapter bug")

    settings = CompensationSettings(budget=BudgetSettings(breaker_failures=2, breaker_open_s=60))

    async def go():
        executor = Executor({"bank_a": Broken()}, settings)
        try:
            for i in range(2):
                executor.submit(QueryRequest("bank_a", f"o{i}", f"a{i}", 1, ("status",), T0))
            return [await executor.result() for _ in range(2)], executor.circuit("bank_a")
        finally:
            await executor.aclose()

    results, circuit = asyncio.run(go())
    assert all(r.api_failed and "adapter bug" in (r.error or "") for r in results)
    assert circuit == "open"
