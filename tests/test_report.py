"""The HTML incident report renders its plots in a real (headless) browser."""

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

from paywatch.clock import ManualClock
from paywatch.embedded.report import CaughtIncident, ReportInput, render
from paywatch.embedded.sqlite_store import SqliteStore

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def doc(i: int, dataset: str, seconds: float, **sections) -> dict:
    return {"@timestamp": ts(seconds), "event": {"id": f"{dataset}-{i}", "dataset": dataset}, **sections}


def incident_store(path) -> SqliteStore:
    store = SqliteStore(path, clock=ManualClock(T0))
    docs = []
    for i in range(600):
        channel = ("alipay", "wechatpay")[i % 2]
        docs.append(
            {
                **doc(i, "paywatch.payment", i * 2),
                "event": {"id": f"p{i}", "dataset": "paywatch.payment", "action": "payment_requested"},
                "payment": {"order_id": f"o{i}", "channel": channel},
            }
        )
        docs.append(doc(i, "paywatch.heartbeat", i * 2, service={"name": "gateway", "instance": {"id": "gw-1"}}))
    for i, (state, sec) in enumerate([("open", 300), ("open", 320), ("resolved", 700), ("resolved", 720)]):
        finding = {"kind": "paid_but_pending", "state": state, "fingerprint": f"pbp:{i % 2}"}
        docs.append(doc(i, "paywatch.finding", sec, finding=finding, payment={"channel": "alipay", "order_id": "o1"}))
    for i, (level, sec) in enumerate([("degraded", 400), ("healthy", 800)]):
        finding = {"kind": "channel_health", "state": "open", "level": level, "fingerprint": "ch:alipay"}
        docs.append(doc(10 + i, "paywatch.finding", sec, finding=finding, payment={"channel": "alipay"}))
    for i, (status, sec) in enumerate([("pending", 300), ("firing", 310), ("resolved", 730)]):
        alert = {"fingerprint": "a1", "status": status, "labels": {"alertname": "PaidButPending"}}
        docs.append(doc(i, "paywatch.alert", sec, alert=alert))
    for i, status in enumerate(["pending", "resolved"]):  # recorded, never paged: not in the report's pages
        alert = {"fingerprint": "a2", "status": status, "labels": {"alertname": "QueryUnavailable"}}
        docs.append(doc(10 + i, "paywatch.alert", 400 + i, alert=alert))
    for i in range(5):
        docs.append(
            {
                **doc(i, "paywatch.action", 330 + i),
                "event": {
                    "id": f"q{i}",
                    "dataset": "paywatch.action",
                    "action": "query",
                    "outcome": "success",
                },
                "payment": {"order_id": f"o{i}", "channel": "alipay"},
            }
        )
    store.write(docs)
    return store


def assert_renders_in_chromium(report, tmp_path, plots: int = 6) -> None:
    """Every plot of `report` decodes in headless Chromium; a screenshot is saved under tmp_path."""
    assert CHROMIUM, "Debian's chromium is required (.ci/run installs it)"
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f'data-plots="ok:{plots}"' in dom, dom[:500]
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000


def test_report_renders_every_plot_in_headless_chromium(tmp_path):
    store = incident_store(tmp_path / "pw.sqlite")
    truth = [
        CaughtIncident(
            "inc-1",
            "callback_outage",
            T0 + timedelta(seconds=240),
            T0 + timedelta(seconds=600),
            True,
            12.5,
            "paid_but_pending_incident on alipay",
        )
    ]
    out = render(ReportInput("Demo incident report", store, truth, {"seed": "7"}), tmp_path / "report.html")
    page = out.read_text()
    assert page.count('class="plot"') == 6
    assert "12.5 s" in page and "callback_outage" in page
    pages = page.split("<h2>Pages</h2>")[1].split("</table>")[0]
    assert pages.count("PaidButPending") == 2 and "pending" not in pages.replace("PaidButPending", "")
    assert "QueryUnavailable" not in pages
    assert_renders_in_chromium(out, tmp_path)
