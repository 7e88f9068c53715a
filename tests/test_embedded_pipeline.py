"""The embedded backend as a service left running (issue 12), as real processes over real sockets:
ingest never waits on a hung receiver or channel, /healthz says which part is stuck, SIGTERM
stops within its bound, repairs reach the order webhook signed, a restart in the middle of an
incident still pages it once, and the process's own heartbeat lands in its own detectors."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time

import pytest
from embedded_process import EmbeddedProcess, charged_but_pending, payment
from hung_peer import Hung
from polling import wait_for
from test_compensation_channels import PLATFORM, Receiver, Truth, keypair  # noqa: F401  (fixture)


def channel_env(keypair) -> dict[str, str]:  # noqa: F811
    return {"PAYWATCH_ALIPAY_PRIVATE_KEY": keypair[0], "PAYWATCH_ALIPAY_PUBLIC_KEY": PLATFORM[1]}


def alipay(url: str, more: str = "") -> str:
    """The `compensation:` section with an Alipay query API at `url`."""
    channel = f'{{adapter: alipay, base_url: "{url}", alipay: {{app_id: "2014"}}}}'
    return f"compensation: {{channels: {{alipay: {channel}}}{more}}}"


def signed_by(secret: str, headers: dict, body: bytes) -> bool:
    """The receiver's own check, written from the documented scheme (HMAC-SHA256 of `ts.body`)."""
    stamp = headers["X-Paywatch-Timestamp"]
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Paywatch-Signature"], "sha256=" + expected)


def own_beats(proc: EmbeddedProcess) -> list[dict]:
    """The heartbeats the embedded process sent about itself, as its store holds them."""
    return [d for d in proc.documents("paywatch.heartbeat") if d["service"]["name"] == "paywatch-embedded"]


def test_hung_webhook_and_channel_leave_ingest_fast_health_names_them_and_sigterm_stops(tmp_path, keypair):  # noqa: F811
    webhook, channel = Hung(), Hung()
    slack = Receiver()  # a healthy sink beside the hung one: its page must not wait
    proc = EmbeddedProcess(
        tmp_path,
        f"""
alerts: {{alertmanager: {{urls: []}}, webhook: {{url: "{webhook.url}/page"}}}}
detectors: {{default: {{paid_grace_s: 1}}}}
{alipay(channel.url + "/gateway.do")}
""",
        {"PAYWATCH_WEBHOOK_SECRET": "whsec-pager", "PAYWATCH_SLACK_WEBHOOK_URL": slack.url, **channel_env(keypair)},
        stuck_after_s=2,
        shutdown_timeout_s=3,
        heartbeat_interval_s=0.5,
    )
    proc.start()
    try:
        # Five orders charged and never recorded as paid: a page (to the hung webhook) and
        # compensating queries (to the hung channel API).
        for n in range(5):
            proc.post(charged_but_pending(f"ord-{n}", f"att-{n}", "alipay"))
        wait_for(lambda: len(webhook.connections) >= 1 and len(channel.connections) >= 1, 60, "both hung calls")
        # A second incident while the webhook still hangs on the first page: Slack gets it at once.
        for n in range(5):
            proc.post(charged_but_pending(f"x-{n}", f"x-att-{n}", "bank_x"))
        posted_at = time.monotonic()
        wait_for(lambda: any(b"bank_x" in body for _, body in slack.received), 60, "bank_x's page at Slack")
        slack_wait_s = time.monotonic() - posted_at
        latencies = [proc.post([payment("order_created", f"later-{n}")]) for n in range(40)]
        _, health = wait_for(lambda: (h := proc.health())[0] == 503 and h, 60, "an unhealthy /healthz")
        parts = health["parts"]
        assert parts["alert_delivery"]["detail"]["stuck_sinks"] == ["webhook"] and not parts["compensation"]["ok"]
        assert parts["store"]["ok"] and parts["detectors"]["ok"]
        # The process's own heartbeat carries the very parts /healthz reports, judged alike.
        said = {name: "ok" if part["ok"] else "fail" for name, part in parts.items()}
        agrees = lambda: [b for b in own_beats(proc) if b["heartbeat"]["checks"] == said]  # noqa: E731
        beat = wait_for(agrees, 30, f"a heartbeat with /healthz's verdicts {said}")[0]
        assert beat["heartbeat"]["status"] == "degraded"
        # Everything sent while they hung was stored and judged.
        assert len(proc.documents("paywatch.payment")) == 10 * 3 + 40
        kinds = lambda: {f["finding"]["kind"] for f in proc.documents("paywatch.finding")}  # noqa: E731
        wait_for(lambda: "paid_but_pending" in kinds(), 30, "the stuck orders judged")
    finally:
        stop_s = proc.stop()
        webhook.stop(), channel.stop(), slack.stop()
    # paid_grace_s (1 s) and a tick, not the hung webhook's retries (10 s per attempt, 5 attempts)
    assert slack_wait_s < 8, slack_wait_s
    assert max(latencies) < 1.0, latencies  # a hung call once blocked ingest for 115 s
    assert stop_s < 3 + 5, proc.output.decode()[-2000:]  # shutdown_timeout_s, plus the interpreter's exit
    assert proc.proc is not None and proc.proc.returncode == 0


def paid_at(keypair, attempt: str, order: str, port: int = 0):  # noqa: F811
    """Alipay's query API on loopback, knowing that `attempt` of `order` was paid."""
    from paywatch.simulator.channel_api import ChannelApiServer

    truth = Truth()
    truth.add(attempt, "paid", channel="alipay", order_id=order)
    return ChannelApiServer("alipay", truth.get, public_key=keypair[1], platform_key=PLATFORM, port=port).start()


def repairing(tmp_path, keypair, channel_url: str, order_system: Receiver, paid_grace_s: float = 1) -> EmbeddedProcess:  # noqa: F811
    """The embedded process querying Alipay at `channel_url`, repairs signed to `order_system`."""
    return EmbeddedProcess(
        tmp_path,
        f"""
alerts: {{alertmanager: {{urls: []}}}}
detectors: {{default: {{paid_grace_s: {paid_grace_s}}}}}
{alipay(channel_url, f', order_webhook: {{url: "{order_system.url}"}}')}
""",
        {"PAYWATCH_ORDER_WEBHOOK_SECRET": "whsec-order-system", **channel_env(keypair)},
    )


def the_repair(order_system: Receiver, order: str) -> None:
    """The order system got one repair of `order`, signed with its secret."""
    ((headers, body),) = order_system.received
    assert signed_by("whsec-order-system", headers, body)
    repair = json.loads(body)
    assert repair["action"]["type"] == "repair" and repair["payment"]["order_id"] == order


def test_order_webhook_gets_the_signed_repair_in_the_embedded_backend(tmp_path, keypair):  # noqa: F811
    channel, order_system = paid_at(keypair, "att-1", "ord-1"), Receiver()
    proc = repairing(tmp_path, keypair, channel.url, order_system)
    proc.start()
    try:
        proc.post(charged_but_pending("ord-1", "att-1", "alipay"))
        wait_for(lambda: order_system.received, 60, "the repair at the order system")
    finally:
        proc.stop()
        channel.stop(), order_system.stop()
    the_repair(order_system, "ord-1")
    assert channel.count("att-1") == 1


def test_a_query_lost_with_a_killed_process_is_asked_again_after_the_restart(tmp_path, keypair):  # noqa: F811
    """The channel hangs on the compensating query; the process is killed; the channel comes back
    on the same address. The restarted process asks again and the repair reaches the order system."""
    hung, order_system, channel = Hung(), Receiver(), None
    proc = repairing(tmp_path, keypair, hung.url, order_system)
    proc.start()
    try:
        proc.post(charged_but_pending("ord-9", "att-9", "alipay"))
        wait_for(lambda: hung.connections, 60, "the compensating query, hanging at the channel")
        proc.kill()
        hung.stop()
        channel = paid_at(keypair, "att-9", "ord-9", port=int(hung.url.rsplit(":", 1)[1]))
        proc.start()
        wait_for(lambda: order_system.received, 60, "the repair after the restart")
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
        order_system.stop()
        if channel is not None:
            channel.stop()
    the_repair(order_system, "ord-9")
    assert channel.count("att-9") == 1
    queries = [a for a in proc.documents("paywatch.action") if a["action"]["type"] == "query"]
    assert [q["event"]["outcome"] for q in queries] == ["success"]


def test_an_order_overdue_while_the_process_was_down_is_queried_after_the_restart(tmp_path, keypair):  # noqa: F811
    """The rebuild finds the stuck order (its grace ran out while paywatch was down) and pages it;
    the compensator must be given it too, or nobody asks the channel."""
    channel, order_system = paid_at(keypair, "att-7", "ord-7"), Receiver()
    proc = repairing(tmp_path, keypair, channel.url, order_system, paid_grace_s=4)
    proc.start()
    try:
        proc.post(charged_but_pending("ord-7", "att-7", "alipay"))
        proc.kill()
        assert not [f for f in proc.documents("paywatch.finding") if f["finding"]["kind"] == "paid_but_pending"]
        time.sleep(6)
        proc.start()
        wait_for(lambda: order_system.received, 60, "the repair after the restart")
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
        order_system.stop(), channel.stop()
    the_repair(order_system, "ord-7")
    assert channel.count("att-7") == 1


def test_an_unsigned_order_webhook_refuses_to_start_in_one_line(tmp_path):
    proc = EmbeddedProcess(
        tmp_path,
        'compensation: {order_webhook: {url: "http://127.0.0.1:9/repair"}}\n',
        {"PAYWATCH_ORDER_WEBHOOK_SECRET": ""},
    )
    out = subprocess.run(
        [sys.executable, "-m", "paywatch.app.cli", "run", "--embedded", "--config", str(proc.config)],
        env=proc.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    assert "allow_unsigned" in out.stderr


@pytest.mark.parametrize("down_s", [0.5, 7.0], ids=["overdue-after-restart", "overdue-while-down"])
def test_a_restart_in_the_middle_of_an_incident_still_pages_it_once(tmp_path, down_s):
    """bank_b's orders become overdue after the restart (found live), or while paywatch is down
    (found by the rebuild, and paged then since the store shows no page for it)."""
    pager = Receiver()
    proc = EmbeddedProcess(
        tmp_path,
        f"""
alerts: {{alertmanager: {{urls: []}}, webhook: {{url: "{pager.url}"}}}}
detectors: {{default: {{paid_grace_s: 5}}}}
""",
        {"PAYWATCH_WEBHOOK_SECRET": "whsec-pager"},
        heartbeat_interval_s=0.5,
    )

    def pages(channel: str) -> list[dict]:
        docs = [alert for _, body in pager.received for alert in json.loads(body)["alerts"]]
        return [
            d
            for d in docs
            if d["alert"]["name"] == "PaidButPending"
            and d["alert"]["status"] == "firing"
            and d["alert"]["labels"].get("channel") == channel
        ]

    try:
        proc.start()
        # bank_a's outage is paged before the restart ...
        for n in range(5):
            proc.post(charged_but_pending(f"a-{n}", f"a-att-{n}", "bank_a"))
        wait_for(lambda: pages("bank_a"), 60, "bank_a's page")
        # ... bank_b's begins right before the process dies: its orders are stored, not yet overdue.
        for n in range(5):
            proc.post(charged_but_pending(f"b-{n}", f"b-att-{n}", "bank_b"))
        proc.kill()
        assert not pages("bank_b")
        time.sleep(down_s)  # longer than the process's own heartbeat allows (0.5 s × grace)
        proc.start()
        wait_for(lambda: pages("bank_b"), 60, "bank_b's page after the restart")
        time.sleep(5)  # re-sends and re-derived findings would show up by now
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()
        pager.stop()
    assert len(pages("bank_a")) == 1, pages("bank_a")
    assert len(pages("bank_b")) == 1, pages("bank_b")
    # The process beats into its own store, and its rebuilt heartbeat table saw its own death.
    beats = own_beats(proc)
    assert len({b["service"]["instance"]["id"] for b in beats}) == 2
    silent = [
        f
        for f in proc.documents("paywatch.finding")
        if f["finding"]["kind"] in ("heartbeat_missing", "service_down")
        and f.get("service", {}).get("name") == "paywatch-embedded"
    ]
    assert silent, "the killed instance's silence was not seen"
